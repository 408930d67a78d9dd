"""A lab cluster of Redis containers, made through the Docker Engine API: the same cluster compose/lab.yml
describes (one container and one named volume per node, host networking on 127.0.0.1 ports, one shared
redis.conf with an absolute `dir`), but on ports and names we choose, so tests can run it beside anything.

Everything made carries the label org.clusterbak.lab=<lab id>; `down` removes exactly the containers and
volumes with that label (and that the state file names), nothing else. State: <dir>/docker-lab.json.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

import docker.errors

from clusterbak.errors import PreconditionError, StepFailed, UsageError
from clusterbak.lab import cluster
from clusterbak.lab.procs import port_free, wait_port
from clusterbak.lab.statefile import read_state, write_state
from clusterbak.model.inventory import inventory_toml
from clusterbak.transports.docker import ENGINE_LOST, engine_client

STATE_FILE = "docker-lab.json"
INVENTORY_FILE = "docker-inventory.toml"
LAB_LABEL = "org.clusterbak.lab"
DEFAULT_IMAGE = "redis:7.4"
CONF_IN_CONTAINER = "/usr/local/etc/redis/redis.conf"
DATA_DIR = "/data"
# The one redis.conf every node shares; the port comes on the command line. compose/redis.conf is this text
# (a unit test holds them equal).
NODE_CONF = """\
# clusterbak lab node (compose/lab.yml and `clusterbak lab up --docker`); the port is given on the command line
bind 127.0.0.1
protected-mode no
dir /data
dbfilename dump.rdb
appendonly no
save ""
cluster-enabled yes
cluster-config-file nodes.conf
cluster-node-timeout 3000
repl-diskless-sync yes
repl-diskless-sync-delay 0
enable-debug-command local
"""


def default_image() -> str:
    return os.environ.get("CLUSTERBAK_REDIS_IMAGE") or DEFAULT_IMAGE


@dataclass(frozen=True, slots=True)
class DockerNode:
    port: int
    role: str  # as created: "master" | "replica"
    container: str
    volume: str

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass(frozen=True, slots=True)
class DockerLab:
    dir: str
    lab_id: str
    image: str
    masters: int
    replicas: int
    base_port: int
    nodes: tuple[DockerNode, ...]
    inventory: str

    @property
    def seed(self) -> str:
        return self.nodes[0].address


def up(lab_dir: Path, image: str | None = None, masters: int = 3, replicas: int = 1, base_port: int = 7000,
       name_prefix: str = "clusterbak-lab", timeout: float = 60.0,
       extra_labels: dict[str, str] | None = None) -> DockerLab:
    """Create and start one container per node, form the cluster, wait for cluster_state:ok, write the
    inventory. On any failure everything made so far is removed again."""
    if masters < 1 or replicas < 0:
        raise UsageError("--masters must be >= 1 and --replicas >= 0")
    lab_dir = lab_dir.absolute()
    if load(lab_dir) is not None:
        raise PreconditionError(
            f"a docker lab is recorded in {lab_dir}; run `clusterbak lab down --docker --dir {lab_dir}`"
        )
    image = image or default_image()
    ports = list(range(base_port, base_port + masters * (1 + replicas)))
    busy = [p for p in ports if not port_free(p) or not port_free(p + 10000)]
    if busy:
        raise PreconditionError(f"port {busy[0]} (or its bus port {busy[0] + 10000}) is in use; pick --base-port")
    client = engine_client(label="lab up --docker")
    _need_image(client, image)
    lab_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    conf = lab_dir / "redis.conf"
    conf.write_text(NODE_CONF)
    conf.chmod(0o644)
    lab_id = secrets.token_hex(6)
    labels = {**(extra_labels or {}), LAB_LABEL: lab_id}
    nodes = [DockerNode(p, "master" if i < masters else "replica", f"{name_prefix}-{p}", f"{name_prefix}-{p}-data")
             for i, p in enumerate(ports)]
    lab = DockerLab(str(lab_dir), lab_id, image, masters, replicas, base_port, tuple(nodes),
                    str(lab_dir / INVENTORY_FILE))
    _save(lab)  # first: a crash half-way still leaves `down` a record of what to remove
    try:
        for node in nodes:
            client.volumes.create(node.volume, labels=labels)
            client.containers.run(
                image, ["redis-server", CONF_IN_CONTAINER, "--port", str(node.port)], name=node.container,
                detach=True, network_mode="host", labels={**labels, "org.clusterbak.port": str(node.port)},
                volumes={node.volume: {"bind": DATA_DIR, "mode": "rw"},
                         str(conf): {"bind": CONF_IN_CONTAINER, "mode": "ro"}})
        for node in nodes:
            if not wait_port(node.port, timeout):
                raise StepFailed(f"container {node.container} did not answer PING on {node.address} within "
                                 f"{timeout:.0f}s: {_tail(client, node.container)}")
        cluster.form_cluster(
            [cluster.LabNode(n.port, n.role, "", 0) for n in nodes], masters, timeout, cluster.LabAccess()
        )
    except BaseException:
        down(lab_dir)
        raise
    Path(lab.inventory).write_text(render_inventory(lab))
    return lab


def down(lab_dir: Path) -> list[str]:
    """Remove the lab's containers and volumes (everything with its label), then its state file."""
    lab = load(lab_dir.absolute())
    if lab is None:
        raise PreconditionError(f"no docker lab recorded in {lab_dir} ({STATE_FILE} missing)")
    removed = purge({LAB_LABEL: lab.lab_id})
    (Path(lab.dir) / STATE_FILE).unlink(missing_ok=True)
    return removed


def purge(labels: dict[str, str]) -> list[str]:
    """Force-remove every container, then volume, then network carrying all these labels; what was removed."""
    selector = {"label": [f"{k}={v}" for k, v in labels.items()]}
    what = ", ".join(f"{k}={v}" for k, v in labels.items())
    client = engine_client(label="docker cleanup")
    removed: list[str] = []
    try:
        for container in client.containers.list(all=True, filters=selector):
            container.remove(force=True, v=True)
            removed.append(f"container {container.name}")
        for volume in client.volumes.list(filters=selector):
            volume.remove(force=True)
            removed.append(f"volume {volume.name}")
        for network in client.networks.list(filters=selector):
            network.remove()
            removed.append(f"network {network.name}")
    except (docker.errors.DockerException, *ENGINE_LOST) as e:
        raise StepFailed(f"docker cleanup: the Docker Engine failed while removing what carries {what}: {e}; "
                         f"remove the rest by that label") from None
    finally:
        client.close()
    return removed


def status(lab: DockerLab) -> dict[str, str]:
    """Container name -> its state ('running', 'exited', 'missing')."""
    client = engine_client(label="lab status --docker")
    try:
        states = {}
        for node in lab.nodes:
            try:
                states[node.container] = client.containers.get(node.container).status
            except docker.errors.NotFound:
                states[node.container] = "missing"
        return states
    finally:
        client.close()


def render_inventory(lab: DockerLab) -> str:
    return inventory_toml(
        ["Written by `clusterbak lab up --docker`: each node is a container, reached through the Docker",
         "Engine API. `docker restart|stop|start {container}` are done through the Engine API, not a CLI."],
        {"transport": "docker", "data_dir": DATA_DIR,
         **{f"{a}_command": f"docker {a} {{container}}" for a in ("restart", "stop", "start")}},
        {node.address: {"container": node.container} for node in lab.nodes})


def load(lab_dir: Path) -> DockerLab | None:
    raw = read_state(lab_dir / STATE_FILE)
    if raw is None:
        return None
    raw["nodes"] = tuple(DockerNode(**n) for n in raw["nodes"])
    return DockerLab(**raw)


def _save(lab: DockerLab) -> None:
    write_state(Path(lab.dir) / STATE_FILE, asdict(lab))


def _need_image(client, image: str) -> None:
    try:
        client.images.get(image)
        return
    except docker.errors.ImageNotFound:
        pass
    try:
        client.images.pull(image)
    except docker.errors.DockerException as e:
        raise PreconditionError(
            f"image {image} is not on this Docker Engine and could not be pulled "
            f"({str(getattr(e, 'explanation', None) or e).strip()[:200]}); "
            "build a local one with scripts/build-test-image.sh and pass it with --image or CLUSTERBAK_REDIS_IMAGE"
        ) from None


def _tail(client, name: str) -> str:
    try:
        container = client.containers.get(name)
        logs = container.logs(tail=3).decode(errors="replace").strip().replace("\n", " | ")
        return f"container {container.status}; last log lines: {logs or '(none)'}"
    except docker.errors.DockerException:
        return "container gone"


if __name__ == "__main__":  # python -m clusterbak.lab.docker_lab purge KEY=VALUE... (used by scripts/test.sh)
    import sys

    if len(sys.argv) < 3 or sys.argv[1] != "purge" or not all("=" in a for a in sys.argv[2:]):
        sys.exit("usage: python -m clusterbak.lab.docker_lab purge KEY=VALUE...")
    for item in purge(dict(a.split("=", 1) for a in sys.argv[2:])):
        print(f"removed {item}")
