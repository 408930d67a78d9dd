"""Options every command shares, and the one wrapper that maps errors to exit codes."""

from __future__ import annotations

from typing import Annotated, Callable, Optional

import typer

from clusterbak.cli.render import Outcome, Renderer
from clusterbak.errors import EXIT_UNEXPECTED, ClusterbakError, exit_code_for
from clusterbak.model.inventory import Inventory
from clusterbak.redisops.connect import PASSWORD_ENV, ConnectionOptions, split_address

Seed = Annotated[str, typer.Option("--seed", help="Any cluster node, HOST:PORT.", envvar="CLUSTERBAK_SEED")]
User = Annotated[Optional[str], typer.Option("--user", help=f"ACL user; the password comes from ${PASSWORD_ENV}.")]
Tls = Annotated[bool, typer.Option("--tls", help="Connect with TLS.")]
CaCert = Annotated[Optional[str], typer.Option("--cacert", help="CA bundle for --tls.")]
Cert = Annotated[Optional[str], typer.Option("--cert", help="Client certificate for --tls.")]
Key = Annotated[Optional[str], typer.Option("--key", help="Client key for --tls.")]
ConnectTimeout = Annotated[float, typer.Option("--connect-timeout", help="Seconds to wait for a TCP connection.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON envelope on stdout, nothing else.")]
InventoryOpt = Annotated[Optional[str], typer.Option("--inventory", help="Inventory TOML (see docs/inventory.md).")]
TlsInsecure = Annotated[bool, typer.Option(
    "--tls-insecure-skip-verify", help="With --tls: accept ANY certificate and host name (unsafe; for a lab only).")]


def connection(seed: str, user: str | None, tls: bool, cacert: str | None, cert: str | None, key: str | None,
               connect_timeout: float, inventory: Inventory | None = None,
               tls_insecure: bool = False) -> ConnectionOptions:
    """Connection options from the flags; the inventory's [redis] username/password_env apply unless --user /
    $REDISCLI_AUTH override them."""
    split_address(seed)  # usage error early, naming the bad value
    opts = ConnectionOptions(seed=seed, username=user, tls=tls, cacert=cacert, cert=cert, key=key,
                             connect_timeout=connect_timeout, tls_insecure=tls_insecure)
    if inventory is not None:
        opts = opts.with_inventory(inventory.username, inventory.password_env)
    return opts


def execute(command: str, json_mode: bool, body: Callable[[Renderer], Outcome]) -> None:
    """Run a command body; print the envelope; exit with the code from errors.py's table."""
    r = Renderer(json_mode)
    try:
        outcome = body(r)
    except ClusterbakError as exc:
        r.error(str(exc))
        outcome = Outcome(exit_code=exit_code_for(exc), errors=[str(exc)])
    except KeyboardInterrupt:
        r.error("interrupted")
        outcome = Outcome(exit_code=130, errors=["interrupted"])
    except Exception as exc:  # noqa: BLE001 - the one place an unexpected error becomes exit 1
        message = f"unexpected {type(exc).__name__}: {exc}"
        r.error(message + " (a bug: please report it with the command you ran)")
        outcome = Outcome(exit_code=EXIT_UNEXPECTED, errors=[message])
    r.envelope(command, outcome)
    raise typer.Exit(outcome.exit_code)
