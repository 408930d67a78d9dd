"""A production-shaped lab: one container per node, each its own host on a private Docker network the lab
creates, with its own sshd and host key, its own data volume, and redis-server (or valkey-server) on port 6379
running as the non-root `redis` user. Images come from scripts/build-images.sh (one per server version).

The inventory it writes reaches every node over SSH at the container's IP, as the `redis` user, with the lab's
key and a known_hosts file of the host keys the containers generated at their first start (read out of each
container through the Engine API: the out-of-band channel a provisioning tool would be). Service commands run
over SSH as `redis`: `node-ctl start|stop|restart`, a small script each container writes for itself.

An upgrade (`upgrade_node`) replaces one node's container by one from another image with the SAME name, data
volume, IP address and host key (the host keys live on a second small volume): what an operator's deploy tool
does when it swaps a package. `clusterbak lab upgrade-node` runs it, so a rolling upgrade can call it as the
per-node upgrade command on the control host.

Everything made carries the label org.clusterbak.lab=<lab id> (and any extra labels, e.g. a test run's);
`down` removes exactly what carries it: containers, volumes, the network. State: <dir>/fleet-lab.json.
"""

from __future__ import annotations

import secrets
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import docker.errors
import redis

from clusterbak.errors import PreconditionError, StepFailed, UsageError
from clusterbak.lab import cluster
from clusterbak.lab.docker_lab import LAB_LABEL, purge
from clusterbak.lab.fleet_versions import FleetVersion
from clusterbak.lab.statefile import read_state, write_state
from clusterbak.model.inventory import inventory_toml
from clusterbak.transports.docker import engine_client

STATE_FILE = "fleet-lab.json"
INVENTORY_FILE = "fleet-inventory.toml"
VERSIONS = tuple(v.value for v in FleetVersion)
PORT = 6379
DATA_DIR = "/data"
SSH_USER = "redis"
NODE_LABEL = "org.clusterbak.fleet-node"
BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build-images.sh"

# Each container runs this as PID 1 (sh): host keys (made once, on the keys volume), the redis user's
# login shell and authorized key, node-ctl, the server, then sshd in the foreground. The node's config is
# written from $NODE_CONF at every start: the data volume keeps only data (dump, AOF, nodes.conf).
ENTRYPOINT = r"""
set -eu
mkdir -p /keys /run/sshd /run/redis
[ -s /keys/ssh_host_ed25519_key ] || ssh-keygen -q -t ed25519 -N '' -C "$(hostname)" -f /keys/ssh_host_ed25519_key
usermod -s /bin/sh -d /var/lib/redis -p '*' redis  # a login shell, and not locked (sshd refuses '!')
mkdir -p /var/lib/redis/.ssh
printf '%s\n' "$AUTHORIZED_KEY" >/var/lib/redis/.ssh/authorized_keys
chown -R redis:redis /var/lib/redis /run/redis "$DATA_DIR"
chmod 700 /var/lib/redis/.ssh; chmod 600 /var/lib/redis/.ssh/authorized_keys
mkdir -p /etc/redis-node; printf '%s\n' "$NODE_CONF" >/etc/redis-node/node.conf
chown -R redis:redis /etc/redis-node  # CONFIG REWRITE writes a temp file beside the config
cat >/usr/local/bin/node-ctl <<EOF
#!/bin/sh
# node-ctl start|stop|restart: the node's server, as the redis user (written by the clusterbak fleet lab)
set -eu
start() { [ "\$(id -u)" = 0 ] && exec_as="su redis -s /bin/sh -c" || exec_as="sh -c"
  \$exec_as "$SERVER /etc/redis-node/node.conf --daemonize yes"
  i=0; until $CLI -p $PORT ping >/dev/null 2>&1; do
    i=\$((i+1)); [ \$i -lt 300 ] || { echo "server did not answer within 30s" >&2; exit 1; }; sleep 0.1
  done; }
stop() { pid=\$(cat /run/redis/server.pid 2>/dev/null || true)
  [ -n "\$pid" ] && kill -0 "\$pid" 2>/dev/null || return 0
  kill -TERM "\$pid"; i=0
  while kill -0 "\$pid" 2>/dev/null; do
    i=\$((i+1)); [ \$i -lt 600 ] || { echo "server \$pid did not stop within 60s" >&2; exit 1; }; sleep 0.1
  done; }
case "\${1:-}" in
  start) start ;; stop) stop ;; restart) stop; start ;;
  *) echo "usage: node-ctl start|stop|restart" >&2; exit 2 ;;
esac
EOF
chmod 755 /usr/local/bin/node-ctl
/usr/local/bin/node-ctl start
exec /usr/sbin/sshd -D -e -o HostKey=/keys/ssh_host_ed25519_key -o PasswordAuthentication=no -o UsePAM=no \
  -o PermitRootLogin=no -o AllowUsers=redis
"""


def node_conf(version: str, port: int = PORT) -> str:
    """The node's config. `enable-debug-command` (7.0+) lets DEBUG DIGEST run; 6.0 allows DEBUG by default."""
    lines = [f"port {port}", "bind 0.0.0.0", "protected-mode no", f"dir {DATA_DIR}", "dbfilename dump.rdb",
             "appendonly no", 'save ""', "cluster-enabled yes", "cluster-config-file nodes.conf",
             "cluster-node-timeout 3000", "repl-diskless-sync yes", "repl-diskless-sync-delay 0",
             "daemonize no", "pidfile /run/redis/server.pid", "logfile /data/server.log"]
    if version != "redis-6.0":
        lines.append("enable-debug-command yes")
    return "\n".join(lines)


def server_binary(version: str) -> tuple[str, str]:
    """(server, cli) for a version name."""
    return ("valkey-server", "valkey-cli") if version.startswith("valkey") else ("redis-server", "redis-cli")


@dataclass(frozen=True, slots=True)
class FleetNode:
    name: str  # container name
    ip: str
    role: str  # as created: "master" | "replica"
    version: str
    image: str
    data_volume: str
    keys_volume: str

    @property
    def address(self) -> str:
        return f"{self.ip}:{PORT}"


@dataclass(frozen=True, slots=True)
class Fleet:
    dir: str
    lab_id: str
    network: str
    subnet: str
    masters: int
    replicas: int
    nodes: tuple[FleetNode, ...]
    inventory: str
    key_file: str
    known_hosts: str
    labels: dict

    @property
    def seed(self) -> str:
        return self.nodes[0].address

    def node(self, address_or_name: str) -> FleetNode:
        for n in self.nodes:
            if address_or_name in (n.address, n.name, n.ip):
                return n
        raise UsageError(f"{address_or_name} is not a node of the fleet lab in {self.dir}")


def build_images(versions: tuple[str, ...] = VERSIONS, timeout: float = 1800.0) -> dict[str, str]:
    """Run scripts/build-images.sh (cached: fast when nothing changed); version -> image."""
    done = subprocess.run([str(BUILD_SCRIPT), *versions], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise PreconditionError(f"scripts/build-images.sh failed: {done.stderr.strip()[-600:]}")
    return dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)


def resolve_image(version: str, image: str | None = None) -> str:
    if version not in VERSIONS:
        raise UsageError(f"--version {version!r} is not one of {', '.join(VERSIONS)}")
    return image or build_images((version,))[version]


def up(lab_dir: Path, version: str, masters: int = 3, replicas: int = 1, image: str | None = None,
       name_prefix: str = "clusterbak-fleet", timeout: float = 90.0,
       extra_labels: dict[str, str] | None = None) -> Fleet:
    """Network, keys, one container per node, cluster formed, inventory written. On failure all is removed."""
    if masters < 1 or replicas < 0:
        raise UsageError("--masters must be >= 1 and --replicas >= 0")
    lab_dir = lab_dir.absolute()
    if load(lab_dir) is not None:
        raise PreconditionError(
            f"a fleet lab is recorded in {lab_dir}; run `clusterbak lab down --fleet --dir {lab_dir}`"
        )
    image = resolve_image(version, image)
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        raise PreconditionError("ssh-keygen not found: install it with `apt-get install openssh-client`")
    lab_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_file = lab_dir / "id_ed25519"
    if not key_file.exists():
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", "clusterbak-fleet", "-f", str(key_file)],
                       check=True, capture_output=True, timeout=30)
    lab_id = secrets.token_hex(6)
    labels = {**(extra_labels or {}), LAB_LABEL: lab_id}
    client = engine_client(label="lab up --fleet")
    prefix = f"{name_prefix}-{lab_id[:6]}"
    fleet = Fleet(str(lab_dir), lab_id, f"{prefix}-net", "", masters, replicas, (), str(lab_dir / INVENTORY_FILE),
                  str(key_file), str(lab_dir / "known_hosts"), labels)
    _save(fleet)  # first: a crash half-way still leaves `down` a record of what to remove
    try:
        subnet = _create_network(client, fleet.network, labels)
        hosts = _addresses(subnet, masters * (1 + replicas))
        nodes = tuple(FleetNode(f"{prefix}-{i + 1}", ip, "master" if i < masters else "replica", version, image,
                                f"{prefix}-{i + 1}-data", f"{prefix}-{i + 1}-keys") for i, ip in enumerate(hosts))
        fleet = replace(fleet, subnet=subnet, nodes=nodes)
        _save(fleet)
        pub = key_file.with_suffix(".pub").read_text().strip()
        for node in nodes:
            client.volumes.create(node.data_volume, labels=labels)
            client.volumes.create(node.keys_volume, labels=labels)
            _run_node(client, fleet, node, pub)
        for node in nodes:
            _wait_node(client, node, timeout)
        _write_known_hosts(client, fleet)
        cluster.form_cluster_at([(n.ip, PORT) for n in nodes], masters, timeout)
        Path(fleet.inventory).write_text(render_inventory(fleet))
    except BaseException:
        down(lab_dir)
        raise
    finally:
        client.close()
    return fleet


def down(lab_dir: Path) -> list[str]:
    fleet = load(lab_dir.absolute())
    if fleet is None:
        raise PreconditionError(f"no fleet lab recorded in {lab_dir} ({STATE_FILE} missing)")
    removed = purge({LAB_LABEL: fleet.lab_id})
    (Path(fleet.dir) / STATE_FILE).unlink(missing_ok=True)
    return removed


def upgrade_node(lab_dir: Path, node_ref: str, version: str, image: str | None = None,
                 timeout: float = 90.0) -> FleetNode:
    """Replace one node's container by one from `version`'s image: same name, IP, data and key volumes.
    The server is stopped cleanly first (node-ctl stop) so its files are at rest when the new one starts."""
    fleet = load(lab_dir.absolute())
    if fleet is None:
        raise PreconditionError(f"no fleet lab recorded in {lab_dir} ({STATE_FILE} missing)")
    old = fleet.node(node_ref)
    image = resolve_image(version, image)
    new = replace(old, version=version, image=image)
    client = engine_client(label="lab upgrade-node")
    try:
        try:
            container = client.containers.get(old.name)
            if container.status == "running":
                container.exec_run(["node-ctl", "stop"], user="redis")
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        _run_node(client, fleet, new, Path(fleet.key_file).with_suffix(".pub").read_text().strip())
        _wait_node(client, new, timeout)
    finally:
        client.close()
    fleet = replace(fleet, nodes=tuple(new if n.name == old.name else n for n in fleet.nodes))
    _save(fleet)
    Path(fleet.inventory).write_text(render_inventory(fleet))
    return new


def container_of(fleet: Fleet, node_ref: str):
    client = engine_client(label="fleet lab")
    return client.containers.get(fleet.node(node_ref).name)


def render_inventory(fleet: Fleet) -> str:
    return inventory_toml(
        ["Written by `clusterbak lab up --fleet`: one container per node, each its own host on a private",
         "Docker network, reached over SSH as the redis user. node-ctl start|stop|restart runs the server as",
         "redis (it is written into each container by the lab)."],
        {"transport": "ssh", "ssh_user": SSH_USER, "ssh_port": 22, "ssh_key": fleet.key_file,
         "known_hosts": fleet.known_hosts, "data_dir": DATA_DIR,
         **{f"{a}_command": f"node-ctl {a}" for a in ("restart", "stop", "start")}},
        {node.address: {"ssh_host": node.ip} for node in fleet.nodes})


def upgrade_command(fleet: Fleet, version: str) -> str:
    """The control-host command a rolling upgrade runs per node ({host} is the node's IP)."""
    return (f"{shlex.quote(sys.executable)} -m clusterbak.lab.fleet upgrade-node --dir {shlex.quote(fleet.dir)} "
            f"--node {{host}} --version {version}")


def versions(fleet: Fleet) -> dict[str, str]:
    """address -> the server's own version (valkey_version for Valkey), read now from INFO server."""
    out = {}
    for node in fleet.nodes:
        c = redis.Redis(host=node.ip, port=PORT, socket_timeout=5, decode_responses=True)
        try:
            info = c.info("server")
            out[node.address] = info.get("valkey_version") and f"valkey {info['valkey_version']}" \
                or f"redis {info['redis_version']}"
        except redis.RedisError as exc:
            out[node.address] = f"unreachable ({exc})"
        finally:
            c.close()
    return out


def load(lab_dir: Path) -> Fleet | None:
    raw = read_state(lab_dir / STATE_FILE)
    if raw is None:
        return None
    raw["nodes"] = tuple(FleetNode(**n) for n in raw["nodes"])
    return Fleet(**raw)


# -- internals ---------------------------------------------------------------------------------------------

def _save(fleet: Fleet) -> None:
    write_state(Path(fleet.dir) / STATE_FILE, asdict(fleet))


def _create_network(client, name: str, labels: dict) -> str:
    """A bridge network with a subnet the engine picks; recreated with that subnet made explicit, because
    only a user-configured subnet allows fixed container addresses (an upgraded node keeps its IP)."""
    probe = client.networks.create(name, driver="bridge", labels=labels)
    try:
        probe.reload()
        subnet = probe.attrs["IPAM"]["Config"][0]["Subnet"]
    finally:
        probe.remove()
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet)])
    client.networks.create(name, driver="bridge", ipam=ipam, labels=labels)
    return subnet


def _addresses(subnet: str, count: int) -> list[str]:
    import ipaddress

    net = ipaddress.ip_network(subnet)
    hosts = list(net.hosts())[10 : 10 + count]  # .1 is the gateway: the control host's side of the bridge
    if len(hosts) < count:
        raise StepFailed(f"the lab network {subnet} is too small for {count} nodes")
    return [str(h) for h in hosts]


def _run_node(client, fleet: Fleet, node: FleetNode, authorized_key: str) -> None:
    server, cli = server_binary(node.version)
    env = {"AUTHORIZED_KEY": authorized_key, "NODE_CONF": node_conf(node.version), "SERVER": server, "CLI": cli,
           "PORT": str(PORT), "DATA_DIR": DATA_DIR}
    container = client.containers.create(
        node.image, ["/bin/sh", "-c", ENTRYPOINT], name=node.name, hostname=node.name, detach=True,
        environment=env, labels={**fleet.labels, NODE_LABEL: node.name, "org.clusterbak.version": node.version},
        volumes={node.data_volume: {"bind": DATA_DIR, "mode": "rw"}, node.keys_volume: {"bind": "/keys", "mode": "rw"}},
        network=fleet.network, stop_signal="SIGTERM")
    net = client.networks.get(fleet.network)
    net.disconnect(container)
    net.connect(container, ipv4_address=node.ip)
    container.start()


def _wait_node(client, node: FleetNode, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        container = client.containers.get(node.name)
        if container.status in ("exited", "dead"):
            raise StepFailed(f"fleet node {node.name} ({node.address}) exited: {_tail(container)}")
        c = redis.Redis(host=node.ip, port=PORT, socket_timeout=1, socket_connect_timeout=1)
        try:
            if c.ping() and _port_open(node.ip, 22):
                return
        except (redis.RedisError, OSError):
            pass
        finally:
            c.close()
        time.sleep(0.2)
    raise StepFailed(f"fleet node {node.name} did not answer PING on {node.address} and SSH within {timeout:.0f}s: "
                     f"{_tail(client.containers.get(node.name))}")


def _port_open(host: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _write_known_hosts(client, fleet: Fleet) -> None:
    lines = []
    for node in fleet.nodes:
        done = client.containers.get(node.name).exec_run(["cat", "/keys/ssh_host_ed25519_key.pub"])
        if done.exit_code != 0:
            raise StepFailed(f"fleet node {node.name}: cannot read its host key: {done.output[-200:]!r}")
        lines.append(f"{node.ip} " + " ".join(done.output.decode().split()[:2]))
    Path(fleet.known_hosts).write_text("\n".join(lines) + "\n")


def _tail(container) -> str:
    try:
        logs = container.logs(tail=5).decode(errors="replace").strip().replace("\n", " | ")
        return f"container {container.status}; last log lines: {logs or '(none)'}"
    except docker.errors.DockerException:
        return "container gone"


def main(argv: list[str]) -> int:
    """python -m clusterbak.lab.fleet upgrade-node --dir D --node ADDR|IP --version V (the upgrade command)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m clusterbak.lab.fleet")
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("upgrade-node")
    u.add_argument("--dir", required=True)
    u.add_argument("--node", required=True)
    u.add_argument("--version", required=True, choices=VERSIONS)
    u.add_argument("--image")
    args = p.parse_args(argv)
    node = upgrade_node(Path(args.dir), args.node, args.version, args.image)
    print(f"{node.address}: now {node.version} ({node.image})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
