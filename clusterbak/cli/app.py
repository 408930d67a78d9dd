"""clusterbak's command line. Each command: load -> plan/inspect -> show/confirm -> execute -> render."""

from __future__ import annotations

from typing import Annotated

import typer

from clusterbak import __version__
from clusterbak.cli import backup_cmd, restore_cmd
from clusterbak.cli import common as c
from clusterbak.cli import rolling_cmd
from clusterbak.cli import inventory_cmd
from clusterbak.cli.lab_cmd import lab_app
from clusterbak.cli.render import Outcome, Renderer
from clusterbak.cli.views import finding_view, topology_view
from clusterbak.config import load_inventory
from clusterbak.engine.inspect import inspect
from clusterbak.errors import EXIT_PRECONDITION
from clusterbak.model.checks import DEFAULT_MAX_LAG, has_critical

app = typer.Typer(name="clusterbak", no_args_is_help=True, add_completion=False,
                  help="Backups, restores, drills and rolling restarts for Redis Cluster.")
app.add_typer(lab_app, name="lab")
backup_cmd.register(app)
rolling_cmd.register(app)
inventory_cmd.register(app)
restore_cmd.register(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"clusterbak {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True)] = False) -> None:
    """clusterbak: see docs/ for a runbook per job."""


@app.command()
def topology(seed: c.Seed, inventory: c.InventoryOpt = None, user: c.User = None, tls: c.Tls = False,
             cacert: c.CaCert = None, cert: c.Cert = None, key: c.Key = None, tls_insecure: c.TlsInsecure = False,
             connect_timeout: c.ConnectTimeout = 3.0, json_out: c.Json = False) -> None:
    """Show the cluster by shard: roles, slots, epochs, offsets, lag, memory and keys."""

    def body(r: Renderer) -> Outcome:
        inv = load_inventory(inventory) if inventory else None
        opts = c.connection(seed, user, tls, cacert, cert, key, connect_timeout, inv, tls_insecure)
        seen = inspect(opts)
        data = topology_view(seed, seen.topology, seen.states)
        r.topology(data)
        return Outcome(data=data)

    c.execute("topology", json_out, body)


@app.command()
def check(seed: c.Seed, inventory: c.InventoryOpt = None, user: c.User = None, tls: c.Tls = False,
          cacert: c.CaCert = None, cert: c.Cert = None, key: c.Key = None, tls_insecure: c.TlsInsecure = False,
          connect_timeout: c.ConnectTimeout = 3.0,
          max_lag: Annotated[int, typer.Option("--max-lag", help="Bytes a replica may trail its master.")] = DEFAULT_MAX_LAG,
          json_out: c.Json = False) -> None:
    """Preflight before a backup or a restart: exit 0 healthy, 3 on any critical finding."""

    def body(r: Renderer) -> Outcome:
        inv = load_inventory(inventory) if inventory else None
        opts = c.connection(seed, user, tls, cacert, cert, key, connect_timeout, inv, tls_insecure)
        seen = inspect(opts, inv, max_lag)
        findings = [finding_view(f) for f in seen.findings]
        r.findings(findings)
        critical = [f"{f.subject}: {f.message}" for f in seen.findings if f.severity == "critical"]
        code = EXIT_PRECONDITION if has_critical(seen.findings) else 0
        return Outcome(data={"seed": seed, "findings": findings, "ready": code == 0}, exit_code=code,
                       errors=critical)

    c.execute("check", json_out, body)


def main() -> None:
    app()
