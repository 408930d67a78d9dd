"""The command-line entry: one place for what every command shares before its body runs.

- SIGTERM (cron, systemd, `timeout`) is handled exactly like SIGINT: it calls whatever SIGINT handler is in force,
  so each command's interrupt cleanup runs (a backup discards its .partial set, a drill removes its lab, a rolling
  restart stops after the current step) and the exit code is 130 either way.
- A usage error (missing or malformed option) is one line on stderr, or with --json the one envelope on stdout.
"""

from __future__ import annotations

import copy
import json
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from typer import _click as click
from typer.core import TyperGroup
from typer.exceptions import Abort

from clusterbak.errors import EXIT_INTERRUPTED, EXIT_USAGE


def _sigterm_as_sigint(signum, frame) -> None:
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:  # SIG_IGN / SIG_DFL: still stop the way Ctrl-C does
        raise KeyboardInterrupt


def _command_name(args: Sequence[str]) -> str:
    words = []
    for arg in args:
        if arg.startswith("-"):
            break
        words.append(arg)
        if arg != "lab":
            break
    return " ".join(words) or "clusterbak"


METAVARS = {"seed": "HOST:PORT", "dest": "DIR", "inventory": "FILE", "dir": "DIR", "lab_dir": "DIR", "out": "FILE",
            "state": "FILE", "metrics_file": "FILE", "cacert": "FILE", "cert": "FILE", "key": "FILE", "user": "NAME",
            "map_": "OLD=NEW[@CPORT]", "nodes": "ADDR,ADDR", "image": "IMAGE", "data_dir": "DIR",
            "max_age": "AGE", "config": "FILE", "backup_id": "BACKUP_ID"}
TYPE_METAVARS = {"int": "N", "float": "NUMBER", "text": "TEXT", "path": "PATH", "integer range": "N"}


def _tidy_help(command) -> None:
    """Flags show no metavar; values show what to type (HOST:PORT, DIR, N) instead of `<str>`/`<bool>`."""
    try:  # --help is made (and cached) on first use: make it now so it gets the same treatment
        help_option = command.get_help_option(click.Context(command))
    except Exception:  # noqa: BLE001 - help cosmetics must never stop a command
        help_option = None
    for param in [*getattr(command, "params", ()), *([help_option] if help_option else [])]:
        if getattr(param, "is_flag", False) or getattr(param, "count", False):
            param.metavar = ""
        elif param.metavar is None and getattr(param, "param_type_name", "") == "argument":
            param.metavar = METAVARS.get(param.name) or param.name.upper()
            param.display_type_rich = lambda ctx: None  # the name says it; no `<str>` beside it
            param.type = copy.copy(param.type)  # typer <0.28 prints the type's metavar instead: an empty one
            param.type.get_metavar = lambda *_args, **_kw: ""
        elif param.metavar is None and getattr(param, "param_type_name", "") == "option":
            kind = getattr(getattr(getattr(param, "type_descriptor", None), "annotation", None), "__name__", "")
            param.metavar = METAVARS.get(param.name) or TYPE_METAVARS.get(kind.lower(), param.name.upper())
    for sub in getattr(command, "commands", {}).values():
        _tidy_help(sub)


class ClusterbakGroup(TyperGroup):
    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, windows_expand_args: bool = True, **extra: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        _tidy_help(self)
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _sigterm_as_sigint)
        try:
            try:
                code = super().main(args=argv, prog_name=prog_name, complete_var=complete_var,
                                    standalone_mode=False, windows_expand_args=windows_expand_args, **extra)
            except click.exceptions.UsageError as exc:
                code = _usage_error(argv, exc)
            except Abort:  # a prompt cut short (Ctrl-C / EOF); typer's vendored click has no exceptions.Abort
                sys.stderr.write("error: aborted\n")
                code = EXIT_INTERRUPTED
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


def _usage_error(argv: list[str], exc: click.exceptions.UsageError) -> int:
    message = exc.format_message().replace("\n", " ")
    ctx = exc.ctx
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    if "--json" in argv:
        doc = {"command": _command_name(argv), "status": "usage_error", "exit_code": EXIT_USAGE, "data": None,
               "errors": [message]}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        sys.stdout.flush()
    else:
        sys.stderr.write(f"error: {message}{hint}\n")
        sys.stderr.flush()
    return EXIT_USAGE
