"""topology and check: the cluster as it is, and the preflight / backup monitoring checks."""

from __future__ import annotations

from typing import Annotated

import typer

from clusterbak.cli import common as c
from clusterbak.cli import repo_opts as ro
from clusterbak.cli.monitor import check_nagios, run_checks
from clusterbak.cli.render import Outcome, Renderer
from clusterbak.cli.views import topology_view
from clusterbak.config import load_inventory
from clusterbak.engine.inspect import inspect
from clusterbak.errors import EXIT_PRECONDITION, UsageError
from clusterbak.model.checks import DEFAULT_MAX_LAG
from clusterbak.model.freshness import CRITICAL


def register(app: typer.Typer) -> None:
    app.command()(topology)
    app.command()(check)


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


def check(
    seed: Annotated[
        str | None,
        typer.Option("--seed", envvar="CLUSTERBAK_SEED", help="Check the cluster through this node (HOST:PORT)."),
    ] = None,
    inventory: c.InventoryOpt = None,
    user: c.User = None,
    tls: c.Tls = False,
    cacert: c.CaCert = None,
    cert: c.Cert = None,
    key: c.Key = None,
    tls_insecure: c.TlsInsecure = False,
    connect_timeout: c.ConnectTimeout = 3.0,
    max_lag: Annotated[int, typer.Option("--max-lag", help="Bytes a replica may trail its master.")] = DEFAULT_MAX_LAG,
    dest: Annotated[
        str | None,
        typer.Option(
            "--dest", envvar="CLUSTERBAK_DEST",
            help="Also check the backups in DIR or s3://BUCKET/PREFIX: freshness, verify, drill.",
        ),
    ] = None,
    max_age: Annotated[
        str,
        typer.Option("--max-age", help="With --dest: newest verified set older than this is CRITICAL (26h, 90m, 7d)."),
    ] = "26h",
    min_sets: Annotated[
        int, typer.Option("--min-sets", min=0, help="With --dest: fewer complete sets is CRITICAL.")
    ] = 1,
    max_drill_age: Annotated[
        str, typer.Option("--max-drill-age", help="With --dest: last passed drill older than this is a WARNING.")
    ] = "8d",
    nagios: Annotated[
        bool,
        typer.Option(
            "--nagios", help="One line in the Nagios plugin format; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN."
        ),
    ] = False,
    s3_endpoint_url: ro.Endpoint = None,
    s3_path_style: ro.PathStyle = False,
    json_out: c.Json = False,
) -> None:
    """Preflight before a backup or a restart (--seed) and backup monitoring (--dest), every check listed with
    OK/WARNING/CRITICAL: exit 0 when nothing is critical, 3 otherwise (--nagios: the plugin codes)."""
    if nagios and not json_out:
        check_nagios(seed, dest, inventory, (user, tls, cacert, cert, key, connect_timeout, tls_insecure), max_lag,
                     (max_age, min_sets, max_drill_age), (s3_endpoint_url, s3_path_style))
        return

    def body(r: Renderer) -> Outcome:
        c.refuse_together(nagios=nagios, json=json_out)
        if not seed and not dest:
            raise UsageError("check needs --seed (the cluster), --dest (the backups), or both")
        cluster, backups = run_checks(
            seed,
            dest,
            inventory,
            (user, tls, cacert, cert, key, connect_timeout, tls_insecure),
            max_lag,
            (max_age, min_sets, max_drill_age),
            (s3_endpoint_url, s3_path_style),
        )
        if cluster is not None:
            r.findings(cluster)
        if backups is not None and dest is not None:
            r.backup_checks(dest, backups)
        critical = [f"{f['subject']}: {f['message']}" for f in cluster or () if f["severity"] == "critical"]
        critical += [f"{b['name']}: {b['detail']}" for b in backups or () if b["status"] == CRITICAL]
        code = EXIT_PRECONDITION if critical else 0
        return Outcome(data={"seed": seed, "findings": cluster, "dest": dest, "backups": backups,
                             "ready": code == 0}, exit_code=code, errors=critical)

    c.execute("check", json_out, body)
