#!/usr/bin/env python3
"""Write a development CA and a server certificate for localhost into certs/dev/.

    python certs/make_dev_certs.py [--out DIR] [--name NAME ...]

Files (PEM): ca.pem (trust this), ca-key.pem, server.pem (leaf + chain),
server-key.pem. certs/dev/ is gitignored: no private key is ever committed.
Uses trustme, which is meant for tests and development, never for production.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent / "dev"
DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")


def make(out: Path, names: tuple[str, ...] = DEFAULT_NAMES) -> dict[str, Path]:
    import trustme

    out.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="proxympm development CA")
    server = ca.issue_cert(*names)
    files = {
        "ca": out / "ca.pem",
        "ca_key": out / "ca-key.pem",
        "cert": out / "server.pem",
        "key": out / "server-key.pem",
    }
    ca.cert_pem.write_to_path(str(files["ca"]))
    ca.private_key_pem.write_to_path(str(files["ca_key"]))
    server.private_key_pem.write_to_path(str(files["key"]))
    with open(files["cert"], "wb") as f:
        for blob in server.cert_chain_pems:
            f.write(blob.bytes())
    for key in ("ca_key", "key"):
        os.chmod(files[key], 0o600)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a development CA and server cert.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    parser.add_argument("--name", action="append", help="host name or IP (repeatable)")
    args = parser.parse_args(argv)
    names = tuple(args.name) if args.name else DEFAULT_NAMES
    files = make(args.out, names)
    try:
        shown = {k: v.relative_to(Path.cwd()) for k, v in files.items()}
    except ValueError:
        shown = dict(files)
    print(f"wrote {', '.join(str(p) for p in shown.values())} for {', '.join(names)}")
    print("httpd.conf:")
    print(f"    SSLCertificateFile {files['cert']}")
    print(f"    SSLCertificateKeyFile {files['key']}")
    print("trust it with:")
    print(f"    curl --cacert {shown['ca']} https://localhost:8443/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
