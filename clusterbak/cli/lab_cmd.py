"""`clusterbak lab ...`: a throwaway cluster of redis-server processes on 127.0.0.1."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from clusterbak.cli import common as c
from clusterbak.cli.render import Outcome, Renderer
from clusterbak.errors import PreconditionError
from clusterbak.lab import cluster
from clusterbak.lab.fleet_versions import FleetVersion
from clusterbak.lab.inventory import write_inventory

lab_app = typer.Typer(no_args_is_help=True, help="Start, fill, inspect and stop a local lab cluster.")

DirOpt = Annotated[
    Path | None, typer.Option("--dir", help="Lab directory (default ~/.clusterbak/lab or $CLUSTERBAK_LAB_DIR).")
]
DockerOpt = Annotated[
    bool, typer.Option("--docker", help="Redis containers through the Docker Engine (see docs/docker.md).")
]
FleetOpt = Annotated[
    bool,
    typer.Option("--fleet", help="One container per node, each its own host with sshd (see docs/compatibility.md)."),
]


def _dir(path: Path | None) -> Path:
    return (path or cluster.default_lab_dir()).absolute()


def lab_view(lab: cluster.Lab) -> dict:
    return {"dir": lab.dir, "seed": lab.seed, "inventory": lab.inventory, "masters": lab.masters,
            "replicas": lab.replicas, "sshd": lab.sshd,
            "nodes": [{"address": n.address, "role": n.role, "dir": n.dir,
                       "pid": cluster.current_pid(n), "running": cluster.current_pid(n) is not None}
                      for n in lab.nodes]}


def _show(r: Renderer, data: dict) -> None:
    r.table(f"lab in {data['dir']}", ("address", "created as", "pid", "running", "dir"),
            [(n["address"], n["role"], n["pid"], n["running"], n["dir"]) for n in data["nodes"]])
    r.line(f"seed {data['seed']}   inventory {data['inventory']}")
    if data.get("sshd"):
        r.line(f"sshd on 127.0.0.1:{data['sshd']['port']} (pid {data['sshd']['pid']}), key {data['sshd']['key_file']}")


@lab_app.command("up")
def up(
    masters: Annotated[int, typer.Option("--masters", help="Masters (shards) to create.")] = 3,
    replicas: Annotated[int, typer.Option("--replicas", help="Replicas per master.")] = 1,
    base_port: Annotated[int, typer.Option("--base-port", help="First port; nodes take the next ones.")] = 7000,
    dir: DirOpt = None,
    ssh: Annotated[bool, typer.Option("--ssh", help="Also start an sshd on loopback; the inventory uses SSH.")] = False,
    docker: DockerOpt = False,
    image: Annotated[
        str | None,
        typer.Option("--image", help="Redis image for --docker (default $CLUSTERBAK_REDIS_IMAGE or redis:7.4)."),
    ] = None,
    fleet: FleetOpt = False,
    version: Annotated[
        FleetVersion, typer.Option("--version", help=f"--fleet: every node's server: {' | '.join(FleetVersion)}.")
    ] = FleetVersion.REDIS_7_0,
    json_out: c.Json = False,
) -> None:
    """Start redis-server processes (or containers, --docker), form the cluster, wait for cluster_state:ok,
    write the inventory."""

    def body(r: Renderer) -> Outcome:
        c.refuse_together(docker=docker, ssh=ssh)
        lab_dir = _dir(dir)
        if fleet:
            from clusterbak.cli import lab_fleet

            return lab_fleet.up(r, lab_dir, version.value, image, masters, replicas)
        if docker:
            from clusterbak.cli import lab_docker

            return lab_docker.up(r, lab_dir, image, masters, replicas, base_port)
        r.note(f"starting {masters * (1 + replicas)} redis-server processes in {lab_dir} ...")
        lab = cluster.up(lab_dir, masters, replicas, base_port)
        if ssh:
            lab = _with_sshd(lab)
        write_inventory(lab)
        data = lab_view(lab)
        _show(r, data)
        return Outcome(data=data)

    c.execute("lab up", json_out, body)


def _with_sshd(lab: cluster.Lab) -> cluster.Lab:
    from clusterbak.lab.sshd import start_sshd

    try:
        sshd = start_sshd(Path(lab.dir) / "sshd")
    except BaseException:
        cluster.down(Path(lab.dir))
        raise
    lab = replace(lab, sshd={"pid": sshd.pid, "port": sshd.port, "user": sshd.user, "key_file": str(sshd.key_file),
                             "known_hosts": str(sshd.known_hosts)})
    cluster.save(lab)
    return lab


@lab_app.command("down")
def down(dir: DirOpt = None, docker: DockerOpt = False, fleet: FleetOpt = False, json_out: c.Json = False) -> None:
    """Stop exactly the processes the lab recorded (its redis-servers and its sshd); --docker/--fleet: remove its
    containers, volumes and network."""

    def body(r: Renderer) -> Outcome:
        if fleet:
            from clusterbak.cli import lab_fleet

            return lab_fleet.down(r, _dir(dir))
        if docker:
            from clusterbak.cli import lab_docker

            return lab_docker.down(r, _dir(dir))
        if cluster.load(_dir(dir)) is None:  # already down: stopping nothing is not an error
            r.line(f"no lab recorded in {_dir(dir)}: nothing to stop", markup=False)
            return Outcome(data={"stopped": []})
        stopped = cluster.down(_dir(dir))
        for item in stopped:
            r.line(f"stopped {item}")
        return Outcome(data={"stopped": stopped})

    c.execute("lab down", json_out, body)


@lab_app.command("status")
def status(dir: DirOpt = None, docker: DockerOpt = False, json_out: c.Json = False) -> None:
    """Show the lab's nodes and whether each is running."""

    def body(r: Renderer) -> Outcome:
        if docker:
            from clusterbak.cli import lab_docker

            return lab_docker.status(r, _dir(dir))
        lab = cluster.load(_dir(dir))
        if lab is None:
            raise PreconditionError(f"no lab in {_dir(dir)}; start one with `clusterbak lab up`")
        data = lab_view(lab)
        _show(r, data)
        return Outcome(data=data)

    c.execute("lab status", json_out, body)


@lab_app.command("load")
def load(
    keys: Annotated[int, typer.Option("--keys", help="How many keys to write.")] = 10000,
    value_size: Annotated[int, typer.Option("--value-size", help="Bytes per value.")] = 32,
    dir: DirOpt = None,
    seed: Annotated[
        str | None, typer.Option("--seed", help="Any node of the cluster to fill (default: the lab's).")
    ] = None,
    json_out: c.Json = False,
) -> None:
    """Fill the lab with mixed data: strings, hashes, lists, sets, sorted sets, streams; every 10th key has a TTL."""
    from clusterbak.lab.load import load_lab

    def body(r: Renderer) -> Outcome:
        address = seed
        if address is None:
            lab = cluster.load(_dir(dir))
            if lab is None:
                raise PreconditionError(f"no lab in {_dir(dir)}; pass --seed or run `clusterbak lab up`")
            address = lab.seed
        result = load_lab(address, keys, value_size)
        r.line(f"wrote {result.keys} keys ({result.with_ttl} with a TTL) through {address}: "
               + ", ".join(f"{k} {n}" for k, n in result.by_kind))
        return Outcome(data={"keys": result.keys, "with_ttl": result.with_ttl, "by_kind": dict(result.by_kind)})

    c.execute("lab load", json_out, body)
