"""`inventory --docker`: an inventory for a running cluster, its nodes found from the seed and their containers by
published port (transports/docker_discover.py), written atomically."""

from __future__ import annotations

import os
from pathlib import Path

from clusterbak.model.inventory import Inventory
from clusterbak.redisops.connect import ConnectionOptions
from clusterbak.redisops.discover import discover
from clusterbak.transports.docker_discover import docker_inventory, render_toml


def write_docker_inventory(conn: ConnectionOptions, out: Path, data_dir: str | None) -> Inventory:
    """Discover the cluster, map every member with an address to its container, write the TOML to `out`."""
    topology = discover(conn)
    addresses = [n.address for n in topology.nodes if not ({"noaddr", "handshake"} & n.flags)]
    inv = docker_inventory(addresses, data_dir, source=str(out))
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render_toml(inv))
    os.replace(tmp, out)
    return inv
