"""The `--docker` side of `clusterbak lab up/down/status`: a lab of Redis containers (clusterbak.lab.docker_lab)."""

from __future__ import annotations

from pathlib import Path

from clusterbak.cli.render import Outcome, Renderer
from clusterbak.errors import PreconditionError
from clusterbak.lab import docker_lab


def view(lab: docker_lab.DockerLab, states: dict[str, str] | None = None) -> dict:
    states = states or {}
    return {"dir": lab.dir, "docker": True, "lab_id": lab.lab_id, "image": lab.image, "seed": lab.seed,
            "inventory": lab.inventory, "masters": lab.masters, "replicas": lab.replicas,
            "nodes": [{"address": n.address, "role": n.role, "container": n.container, "volume": n.volume,
                       "state": states.get(n.container, "running")} for n in lab.nodes]}


def show(r: Renderer, data: dict) -> None:
    r.table(f"docker lab {data['lab_id']} ({data['image']})", ("address", "created as", "container", "volume", "state"),
            [(n["address"], n["role"], n["container"], n["volume"], n["state"]) for n in data["nodes"]])
    r.line(f"seed {data['seed']}   inventory {data['inventory']}   state in {data['dir']}")


def up(r: Renderer, lab_dir: Path, image: str | None, masters: int, replicas: int, base_port: int) -> Outcome:
    image = image or docker_lab.default_image()
    r.note(f"starting {masters * (1 + replicas)} containers from {image} (host network, 127.0.0.1) ...")
    lab = docker_lab.up(lab_dir, image, masters, replicas, base_port)
    data = view(lab)
    show(r, data)
    return Outcome(data=data)


def down(r: Renderer, lab_dir: Path) -> Outcome:
    if docker_lab.load(lab_dir) is None:  # already down: removing nothing is not an error
        r.line(f"no docker lab recorded in {lab_dir}: nothing to remove")
        return Outcome(data={"removed": []})
    removed = docker_lab.down(lab_dir)
    for item in removed:
        r.line(f"removed {item}")
    return Outcome(data={"removed": removed})


def status(r: Renderer, lab_dir: Path) -> Outcome:
    lab = docker_lab.load(lab_dir)
    if lab is None:
        raise PreconditionError(f"no docker lab in {lab_dir}; start one with `clusterbak lab up --docker`")
    data = view(lab, docker_lab.status(lab))
    show(r, data)
    return Outcome(data=data)
