"""`clusterbak inventory --docker`: write an inventory by matching every cluster node to a running container."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from clusterbak.cli import common as c
from clusterbak.cli.render import Outcome, Renderer
from clusterbak.errors import UsageError


def register(app: typer.Typer) -> None:
    app.command("inventory")(inventory)


def inventory(
    seed: c.Seed,
    out: Annotated[Path, typer.Option("--out", help="Where to write the inventory TOML.")],
    docker: Annotated[bool, typer.Option("--docker", help="Find each node's container on the Docker Engine.")] = False,
    data_dir: Annotated[
        str | None, typer.Option("--data-dir", help="data_dir for every node (default: CONFIG GET dir).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
    user: c.User = None,
    tls: c.Tls = False,
    cacert: c.CaCert = None,
    cert: c.Cert = None,
    key: c.Key = None,
    connect_timeout: c.ConnectTimeout = 3.0,
    json_out: c.Json = False,
) -> None:
    """Discover the cluster from --seed and write an inventory for it (today: --docker, containers by port)."""
    from clusterbak.engine.inventory import write_docker_inventory

    def body(r: Renderer) -> Outcome:
        if not docker:
            raise UsageError("only --docker discovery exists; write other inventories by hand (docs/inventory.md)")
        if out.exists() and not force:
            raise UsageError(f"{out} exists; pass --force to overwrite it")
        inv = write_docker_inventory(c.connection(seed, user, tls, cacert, cert, key, connect_timeout), out, data_dir)
        rows = [(n.address, n.container) for n in inv.nodes]
        r.table(f"inventory {out}", ("node", "container"), rows)
        return Outcome(data={"inventory": str(out), "nodes": [{"address": a, "container": ct} for a, ct in rows]})

    c.execute("inventory", json_out, body)
