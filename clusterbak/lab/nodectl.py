"""Service commands for lab nodes, so the lab inventory has real start/stop/restart commands.

    python -m clusterbak.lab.nodectl start|stop|restart --dir DATA_DIR --port PORT

Exit 0 when done; non-zero with one line on stderr otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clusterbak.errors import ClusterbakError
from clusterbak.lab.procs import is_our_redis, pid_alive, read_pid, start_server, stop_pid


def stop(node_dir: Path) -> None:
    pid = read_pid(node_dir / "redis.pid")
    if pid and pid_alive(pid) and is_our_redis(pid, node_dir / "redis.conf"):
        stop_pid(pid)


def start(node_dir: Path, port: int) -> int:
    return start_server(node_dir / "redis.conf", port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clusterbak.lab.nodectl")
    parser.add_argument("action", choices=("start", "stop", "restart"))
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--port", required=True, type=int)
    args = parser.parse_args(argv)
    try:
        if args.action in ("stop", "restart"):
            stop(args.dir)
        if args.action in ("start", "restart"):
            start(args.dir, args.port)
    except ClusterbakError as exc:
        print(f"nodectl: {exc}", file=sys.stderr)
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
