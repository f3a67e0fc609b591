"""Command line, like httpd's: -f -d -D -t -S -v -k start|stop|restart|graceful|graceful-stop."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from proxympm import __version__

SIGNALS = {
    "stop": signal.SIGTERM,
    "restart": signal.SIGHUP,
    "graceful": signal.SIGUSR1,
    "graceful-stop": signal.SIGWINCH,
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="proxympm",
        description="HTTP/1.1 reverse proxy with Apache httpd's event MPM, configured "
        "with httpd.conf syntax.",
    )
    p.add_argument("-f", dest="config", default="conf/proxympm.conf",
                   help="configuration file (default: conf/proxympm.conf under ServerRoot)")
    p.add_argument("-d", dest="server_root", default=None,
                   help="ServerRoot (default: the current directory)")
    p.add_argument("-D", dest="defines", action="append", default=[],
                   help="define a name for <IfDefine>; FOREGROUND stays in the foreground")
    p.add_argument("-t", dest="test", action="store_true", help="check the configuration")
    p.add_argument("-S", dest="show", action="store_true",
                   help="show the parsed listeners, hosts and routes")
    p.add_argument("-v", dest="version", action="store_true", help="show the version")
    p.add_argument("-k", dest="command", choices=["start", *SIGNALS], default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.version:
        print(f"Server version: proxympm/{__version__} (Python {sys.version.split()[0]})")
        return 0
    from proxympm.config import ConfigError, describe, load_config

    root = args.server_root
    path = args.config
    if not os.path.isabs(path):
        path = os.path.join(root or os.getcwd(), path)
    try:
        config = load_config(path, args.defines, root)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"proxympm: could not open configuration file {path}: {exc.strerror}",
              file=sys.stderr)
        return 1
    for warning in config.warnings:
        print(warning, file=sys.stderr)
    if args.show:
        print(describe(config))
        if not args.test:
            return 0
    from proxympm.tls import validate_tls

    tls_errors = validate_tls(config)
    if tls_errors:
        for line in tls_errors:
            print(line, file=sys.stderr)
        return 1
    if args.test:
        print("Syntax OK", file=sys.stderr)
        return 0

    from proxympm.mpm.arbiter import Arbiter, read_pid

    running = read_pid(config.pid_file)
    if args.command in SIGNALS:
        if running is None:
            if args.command in ("stop", "graceful-stop"):
                print("proxympm (no pid file) not running", file=sys.stderr)
                return 0
            print("proxympm not running, trying to start", file=sys.stderr)
        else:
            os.kill(running, SIGNALS[args.command])
            return 0
    elif running is not None:
        print(f"proxympm (pid {running}) already running", file=sys.stderr)
        return 1

    arbiter = Arbiter(config, path, args.defines, root)
    if "FOREGROUND" not in args.defines and "NO_DETACH" not in args.defines:
        _detach()
    try:
        return arbiter.run()
    except OSError as exc:
        print(f"proxympm: {exc.strerror or exc}", file=sys.stderr)
        arbiter.log.error("core", str(exc.strerror or exc))
        return 1


def _detach() -> None:
    """Daemonize like httpd: fork, new session, stdio to /dev/null."""
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if devnull > 2:
        os.close(devnull)
