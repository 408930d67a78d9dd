"""The `--fleet` side of `clusterbak lab up/down`: one container per node, each its own host with sshd
(clusterbak.lab.fleet; images from scripts/build-images.sh)."""

from __future__ import annotations

from pathlib import Path

from clusterbak.cli.render import Outcome, Renderer
from clusterbak.lab import fleet as fl


def view(fleet: fl.Fleet) -> dict:
    return {"dir": fleet.dir, "fleet": True, "lab_id": fleet.lab_id, "network": fleet.network, "subnet": fleet.subnet,
            "seed": fleet.seed, "inventory": fleet.inventory, "known_hosts": fleet.known_hosts,
            "masters": fleet.masters, "replicas": fleet.replicas,
            "nodes": [{"address": n.address, "role": n.role, "container": n.name, "version": n.version,
                       "image": n.image, "volume": n.data_volume} for n in fleet.nodes]}


def up(r: Renderer, lab_dir: Path, version: str, image: str | None, masters: int, replicas: int) -> Outcome:
    r.note(f"starting {masters * (1 + replicas)} hosts ({version}) on a private Docker network; images are built "
           "by scripts/build-images.sh when missing (a few minutes the first time) ...")
    data = view(fl.up(lab_dir, version, masters, replicas, image))
    r.table(f"fleet lab {data['lab_id']} on {data['network']} ({data['subnet']})",
            ("address", "created as", "container", "version"),
            [(n["address"], n["role"], n["container"], n["version"]) for n in data["nodes"]])
    r.line(f"seed {data['seed']}   inventory {data['inventory']} (SSH as redis, known_hosts {data['known_hosts']})")
    return Outcome(data=data)


def down(r: Renderer, lab_dir: Path) -> Outcome:
    removed = fl.down(lab_dir)
    for item in removed:
        r.line(f"removed {item}")
    return Outcome(data={"removed": removed})
