"""clusterbak's command line. Each command: load -> plan/inspect -> show/confirm -> execute -> render.

Start-up cost (issue 14): `main` builds the app with only the commands of the module a command line names
(`clusterbak backup ...` imports and builds backup's commands, not restore's, rolling-restart's or the lab's);
anything else (`--help`, `--version`, completion, an unknown name) gets every command. `app` (every command) is
built on first use, for tests and tools that drive the CLI in-process."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Annotated

import typer

from clusterbak import __version__
from clusterbak.cli.entry import ClusterbakGroup


def _backup(app: typer.Typer) -> None:
    from clusterbak.cli import backup_cmd

    backup_cmd.register(app)


def _rolling(app: typer.Typer) -> None:
    from clusterbak.cli import rolling_cmd

    rolling_cmd.register(app)


def _inventory(app: typer.Typer) -> None:
    from clusterbak.cli import inventory_cmd

    inventory_cmd.register(app)


def _restore(app: typer.Typer) -> None:
    from clusterbak.cli import restore_cmd

    restore_cmd.register(app)


def _restore_keys(app: typer.Typer) -> None:
    from clusterbak.cli import restore_keys_cmd

    restore_keys_cmd.register(app)


def _cluster(app: typer.Typer) -> None:
    from clusterbak.cli import cluster_cmd

    cluster_cmd.register(app)


def _lab(app: typer.Typer) -> None:
    from clusterbak.cli.lab_cmd import lab_app

    app.add_typer(lab_app, name="lab")


def _keys(app: typer.Typer) -> None:
    from clusterbak.cli.keys_cmd import keys_app

    app.add_typer(keys_app, name="keys")


# every top-level command -> what registers it (with its siblings of the same module); the order of the help
# listing is the order of first appearance here (tests/unit/test_cli_lazy.py checks this table against the app)
COMMANDS: dict[str, Callable[[typer.Typer], None]] = {
    "backup": _backup, "list": _backup, "show": _backup, "verify": _backup, "prune": _backup, "unpin": _backup,
    "rolling-restart": _rolling, "inventory": _inventory, "restore": _restore, "drill": _restore,
    "restore-keys": _restore_keys, "topology": _cluster, "check": _cluster, "lab": _lab, "keys": _keys,
}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"clusterbak {__version__}")
        raise typer.Exit()


def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    """clusterbak: see docs/ for a runbook per job."""


def build(names: Iterable[str] | None = None) -> typer.Typer:
    """The app with the commands of the modules that register `names` (None: every command)."""
    app = typer.Typer(name="clusterbak", cls=ClusterbakGroup, no_args_is_help=True, add_completion=True,
                      help="Backups, restores, drills and rolling restarts for Redis Cluster.")
    app.callback()(_root)
    wanted = set(COMMANDS) if names is None else set(names)
    for register in dict.fromkeys(r for n, r in COMMANDS.items() if n in wanted):
        register(app)
    return app


def for_argv(argv: list[str]) -> typer.Typer:
    """Only the named command's module when the first word is a command; else (options first, --help, no word,
    an unknown word: typer's own messages) every command."""
    return build([argv[0]] if argv and argv[0] in COMMANDS else None)


def __getattr__(name: str) -> typer.Typer:
    if name == "app":  # every command, built once on first use
        globals()["app"] = full = build()
        return full
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    for_argv(sys.argv[1:])()
