"""Options every command shares, and the one wrapper that maps errors to exit codes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated

import typer

from clusterbak.cli.render import Outcome, Renderer
from clusterbak.engine.metrics import check_metrics_path, write_job_metrics
from clusterbak.errors import (
    EXIT_INTERRUPTED,
    EXIT_UNEXPECTED,
    EXIT_USAGE,
    ClusterbakError,
    UsageError,
    exit_code_for,
)
from clusterbak.model.inventory import Inventory
from clusterbak.redisops.connect import PASSWORD_ENV, ConnectionOptions, split_address

Seed = Annotated[str, typer.Option("--seed", help="Any cluster node, HOST:PORT.", envvar="CLUSTERBAK_SEED")]
User = Annotated[str | None, typer.Option("--user", help=f"ACL user; the password comes from ${PASSWORD_ENV}.")]
Tls = Annotated[bool, typer.Option("--tls", help="Connect with TLS.")]
CaCert = Annotated[str | None, typer.Option("--cacert", help="CA bundle for --tls.")]
Cert = Annotated[str | None, typer.Option("--cert", help="Client certificate for --tls.")]
Key = Annotated[str | None, typer.Option("--key", help="Client key for --tls.")]
ConnectTimeout = Annotated[float, typer.Option("--connect-timeout", help="Seconds to wait for a TCP connection.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON envelope on stdout, nothing else.")]
InventoryOpt = Annotated[str | None, typer.Option("--inventory", help="Inventory TOML (see docs/inventory.md).",
                                                     envvar="CLUSTERBAK_INVENTORY")]
InventoryFile = Annotated[str, typer.Option("--inventory", help="Inventory TOML (see docs/inventory.md).",
                                        envvar="CLUSTERBAK_INVENTORY")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="For cron: no tables or progress; errors and the final "
                                                           "verdict line only.")]
AcceptNewHostKeys = Annotated[bool, typer.Option("--accept-new-host-keys",
                                                 help="Trust (and record) SSH host keys not yet in known_hosts.")]
MetricsFile = Annotated[str | None, typer.Option("--metrics-file", help="Write Prometheus textfile metrics "
                                                    "(node_exporter's textfile collector) to this .prom file.")]
TlsInsecure = Annotated[bool, typer.Option(
    "--tls-insecure-skip-verify", help="With --tls: accept ANY certificate and host name (unsafe; for a lab only).")]


def refuse_together(**flags: bool) -> None:
    """Flags that contradict each other are a usage error, never silently resolved."""
    given = [f"--{name.replace('_', '-')}" for name, on in flags.items() if on]
    if len(given) == len(flags):
        raise UsageError(f"{' and '.join(given)} cannot be used together")


def check_seed(seed: str) -> None:
    """A usage error (exit 2) naming --seed when it is not host:port."""
    split_address(seed)


def connection(seed: str, user: str | None, tls: bool, cacert: str | None, cert: str | None, key: str | None,
               connect_timeout: float, inventory: Inventory | None = None,
               tls_insecure: bool = False) -> ConnectionOptions:
    """Connection options from the flags; the inventory's [redis] username/password_env apply unless --user /
    $REDISCLI_AUTH override them."""
    check_seed(seed)  # usage error early, naming the bad value
    check_tls_flags(tls, cacert, cert, key, tls_insecure)
    opts = ConnectionOptions(seed=seed, username=user, tls=tls, cacert=cacert, cert=cert, key=key,
                             connect_timeout=connect_timeout, tls_insecure=tls_insecure)
    if inventory is not None:
        opts = opts.with_inventory(inventory.username, inventory.password_env)
    return opts


def check_tls_flags(tls: bool, cacert: str | None, cert: str | None, key: str | None,
                    tls_insecure: bool = False) -> None:
    given = [flag for flag, value in (("--cacert", cacert), ("--cert", cert), ("--key", key),
                                      ("--tls-insecure-skip-verify", tls_insecure)) if value]
    if given and not tls:
        raise UsageError(f"{', '.join(given)} only apply with --tls; add --tls or drop them")


def execute(command: str, json_mode: bool, body: Callable[[Renderer], Outcome], quiet: bool = False,
            metrics_file: str | None = None) -> None:
    """Run a command body; print the envelope; write --metrics-file; exit with the code from errors.py's table."""
    r = Renderer(json_mode, quiet)
    started = time.time()
    try:
        check_metrics_path(metrics_file)
        outcome = body(r)
    except ClusterbakError as exc:
        r.error(str(exc))
        outcome = Outcome(exit_code=exit_code_for(exc), errors=[str(exc)])
    except KeyboardInterrupt:
        r.error("interrupted")
        outcome = Outcome(exit_code=EXIT_INTERRUPTED, errors=["interrupted"])
    except Exception as exc:  # noqa: BLE001 - the one place an unexpected error becomes exit 1
        message = f"unexpected {type(exc).__name__}: {exc}"
        r.error(message + " (a bug: please report it with the command you ran)")
        outcome = Outcome(exit_code=EXIT_UNEXPECTED, errors=[message])
    if metrics_file and outcome.exit_code != EXIT_USAGE:
        try:
            write_job_metrics(metrics_file, command, outcome.exit_code == 0, started, time.time(),
                              outcome.data if isinstance(outcome.data, dict) else None)
        except OSError as exc:
            r.error(f"--metrics-file {metrics_file}: cannot write: {exc.strerror or exc}")
            outcome.errors.append(f"metrics file not written: {exc}")
    r.envelope(command, outcome)
    raise typer.Exit(outcome.exit_code)
