from proxympm.cli import main

raise SystemExit(main())
