"""Bring a lab cluster up and down. State lives in <dir>/lab.json; `down` stops exactly those nodes."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from clusterbak.errors import PreconditionError, StepFailed, UsageError
from clusterbak.lab.procs import find_binary, is_our_redis, pid_alive, port_free, read_pid, start_server, stop_pid
from clusterbak.model.topology import SLOT_COUNT, parse_cluster_nodes

STATE_FILE = "lab.json"
NODE_TIMEOUT_MS = 3000


def default_lab_dir() -> Path:
    return Path(os.environ.get("CLUSTERBAK_LAB_DIR") or Path.home() / ".clusterbak" / "lab").absolute()


@dataclass(frozen=True, slots=True)
class LabNode:
    port: int
    role: str  # "master" | "replica" (as created)
    dir: str
    pid: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def conf(self) -> Path:
        return Path(self.dir) / "redis.conf"


@dataclass(frozen=True, slots=True)
class Lab:
    dir: str
    masters: int
    replicas: int
    base_port: int
    nodes: tuple[LabNode, ...]
    inventory: str
    sshd: dict | None = None

    @property
    def seed(self) -> str:
        return self.nodes[0].address


@dataclass(frozen=True, slots=True)
class LabAccess:
    """How the lab's own code reaches its nodes: a password (requirepass + masterauth) and/or TLS files made by
    the caller (tls_dir holds ca.crt, node.crt, node.key; then `port 0` and every link is TLS)."""

    password: str | None = None
    tls_dir: str | None = None
    acl_users: str | None = None  # ACL-file lines: each node gets `aclfile <its dir>/users.acl` holding them

    def conf(self, port: int, node_dir: Path | None = None) -> dict[str, str]:
        out: dict[str, str] = {}
        if self.password:
            out.update(requirepass=self.password, masterauth=self.password)
        if self.acl_users is not None and node_dir is not None:
            out["aclfile"] = conf_value(str(node_dir / "users.acl"))
        if self.tls_dir:
            d = Path(self.tls_dir)
            out.update({"port": "0", "tls-port": str(port), "tls-cert-file": str(d / "node.crt"),
                        "tls-key-file": str(d / "node.key"), "tls-ca-cert-file": str(d / "ca.crt"),
                        "tls-cluster": "yes", "tls-replication": "yes", "tls-auth-clients": "optional"})
        return out

    def client(self, port: int, **kwargs) -> redis.Redis:
        tls: dict[str, Any] = {}
        if self.tls_dir:
            d = Path(self.tls_dir)
            tls = dict(ssl=True, ssl_ca_certs=str(d / "ca.crt"), ssl_certfile=str(d / "node.crt"),
                       ssl_keyfile=str(d / "node.key"), ssl_cert_reqs="required", ssl_check_hostname=True)
        return redis.Redis(host="127.0.0.1", port=port, password=self.password, protocol=2, **tls, **kwargs)


def conf_value(value: str) -> str:
    """A redis.conf value, quoted when it needs to be (a path with spaces or quotes stays one argument)."""
    if value and all(ch.isalnum() or ch in "/._-:@+" for ch in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def node_conf(port: int, node_dir: Path, extra: dict[str, str] | None = None) -> str:
    settings = {
        "port": str(port), "bind": "127.0.0.1", "daemonize": "yes",
        "pidfile": conf_value(str(node_dir / "redis.pid")), "logfile": conf_value(str(node_dir / "redis.log")),
        "dir": conf_value(str(node_dir)), "dbfilename": "dump.rdb", "cluster-enabled": "yes",
        "cluster-config-file": f"nodes-{port}.conf", "cluster-node-timeout": str(NODE_TIMEOUT_MS),
        "appendonly": "no", "save": '""', "enable-debug-command": "local",
        "repl-diskless-sync": "yes", "repl-diskless-sync-delay": "0",
    }
    settings.update(extra or {})
    return "".join(f"{k} {v}\n" for k, v in settings.items())


def up(lab_dir: Path, masters: int = 3, replicas: int = 1, base_port: int = 7000,
       extra_conf: dict[str, str] | None = None, timeout: float = 30.0, form: bool = True,
       access: LabAccess | None = None) -> Lab:
    """Start the nodes; with form=False they stay lone empty cluster nodes (a drill restores into them)."""
    if masters < 1 or replicas < 0:
        raise UsageError("--masters must be >= 1 and --replicas >= 0")
    lab_dir = lab_dir.absolute()
    existing = load(lab_dir)
    if existing and any(pid_alive(n.pid) for n in existing.nodes):
        raise PreconditionError(f"a lab is already running from {lab_dir}; run `clusterbak lab down --dir {lab_dir}`")
    find_binary("redis-server")
    count = masters * (1 + replicas)
    ports = list(range(base_port, base_port + count))
    busy = [p for p in ports if not port_free(p) or not port_free(p + 10000)]
    if busy:
        raise PreconditionError(f"port {busy[0]} (or its bus port {busy[0] + 10000}) is in use; pick --base-port")
    lab_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    nodes: list[LabNode] = []
    try:
        for i, port in enumerate(ports):
            node_dir = lab_dir / str(port)
            node_dir.mkdir(exist_ok=True)
            conf = {**(access.conf(port, node_dir) if access else {}), **(extra_conf or {})}
            if access and access.acl_users is not None:
                (node_dir / "users.acl").write_text(access.acl_users.strip() + "\n")
            (node_dir / "redis.conf").write_text(node_conf(port, node_dir, conf))
            pid = start_server(node_dir / "redis.conf", port)
            nodes.append(LabNode(port, "master" if i < masters else "replica", str(node_dir), pid))
            _save(lab_dir, Lab(str(lab_dir), masters, replicas, base_port, tuple(nodes), ""))
        if form:
            form_cluster(nodes, masters, timeout, access or LabAccess())
    except BaseException:
        for node in nodes:
            stop_pid(node.pid)
        (lab_dir / STATE_FILE).unlink(missing_ok=True)
        raise
    lab = Lab(str(lab_dir), masters, replicas, base_port, tuple(nodes), str(lab_dir / "inventory.toml"))
    _save(lab_dir, lab)
    return lab


def form_cluster(nodes: list[LabNode], masters: int, timeout: float, access: LabAccess) -> None:
    clients = {("127.0.0.1", n.port): access.client(n.port, decode_responses=True, socket_timeout=5) for n in nodes}
    form_cluster_with(clients, masters, timeout)


def form_cluster_at(addresses: list[tuple[str, int]], masters: int, timeout: float) -> None:
    """The same on nodes at their own hosts (the fleet lab: one container per node, no password)."""
    form_cluster_with({a: redis.Redis(host=a[0], port=a[1], decode_responses=True, socket_timeout=5)
                       for a in addresses}, masters, timeout)


def form_cluster_with(clients: dict[tuple[str, int], redis.Redis], masters: int, timeout: float) -> None:
    """ADDSLOTS + distinct config epochs on the first `masters`, MEET everyone, then REPLICATE round-robin.
    ADDSLOTS (not ADDSLOTSRANGE, 7.0+) so that Redis 6 nodes form too. Closes the clients."""
    addresses = list(clients)
    try:
        per = SLOT_COUNT // masters
        for i, node in enumerate(addresses[:masters]):
            start, end = i * per, (SLOT_COUNT - 1 if i == masters - 1 else (i + 1) * per - 1)
            clients[node].execute_command("CLUSTER", "ADDSLOTS", *range(start, end + 1))
            clients[node].execute_command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
        first = addresses[0]
        for node in addresses[1:]:
            clients[node].execute_command("CLUSTER", "MEET", first[0], first[1])
        _wait(lambda: all(len(parse_cluster_nodes(c.execute_command("CLUSTER", "NODES")).nodes) == len(addresses)
                          for c in clients.values()), timeout, "nodes did not all meet")
        ids = {a: clients[a].execute_command("CLUSTER", "MYID") for a in addresses}
        for j, node in enumerate(addresses[masters:]):
            master = addresses[j % masters]
            _wait(lambda node=node, master=master: _knows_master(clients[node], ids[master]), timeout,
                  f"{node[0]}:{node[1]} does not see its master yet")
            clients[node].execute_command("CLUSTER", "REPLICATE", ids[master])
        _wait(lambda: all(c.execute_command("CLUSTER", "INFO").find("cluster_state:ok") >= 0
                          for c in clients.values()), timeout, "cluster_state did not become ok")
        _wait(lambda: all(clients[a].info("replication").get("master_link_status") == "up"
                          for a in addresses[masters:]), timeout, "replicas did not finish syncing")
        _wait(lambda: _views_agree(clients), timeout, "nodes do not agree on roles yet")
    finally:
        for c in clients.values():
            c.close()


def _knows_master(client: redis.Redis, master_id: str) -> bool:
    topo = parse_cluster_nodes(client.execute_command("CLUSTER", "NODES"))
    try:
        return topo.by_id(master_id).is_master
    except KeyError:
        return False


def _views_agree(clients: dict) -> bool:
    views = {tuple(sorted((n.node_id, n.role, n.master_id or "") for n in
                          parse_cluster_nodes(c.execute_command("CLUSTER", "NODES")).nodes))
             for c in clients.values()}
    return len(views) == 1


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except redis.RedisError:
            pass
        time.sleep(0.1)
    raise StepFailed(f"lab: {what} within {timeout:.0f}s")


def current_pid(node: LabNode) -> int | None:
    """The node's live pid: the recorded one, or the pidfile's after a restart by clusterbak."""
    for pid in (node.pid, read_pid(Path(node.dir) / "redis.pid")):
        if pid and pid_alive(pid) and is_our_redis(pid, node.conf):
            return pid
    return None


def down(lab_dir: Path) -> list[str]:
    lab = load(lab_dir.absolute())
    if lab is None:
        raise PreconditionError(f"no lab recorded in {lab_dir} ({STATE_FILE} missing)")
    running = [(node, current_pid(node)) for node in lab.nodes]
    running = [(node, pid) for node, pid in running if pid]
    # replicas first, then masters, each group at once: a master stopped while its replicas are connected waits
    # up to shutdown-timeout (10 s) for them to catch up
    replicas = [item for item in running if _is_replica(item[0].port, item[0].role == "replica")]
    for group in (replicas, [item for item in running if item not in replicas]):
        with ThreadPoolExecutor(max_workers=max(1, len(group))) as pool:
            list(pool.map(lambda item: stop_pid(item[1]), group))
    stopped = [f"redis-server 127.0.0.1:{node.port} (pid {pid})" for node, pid in running]
    if lab.sshd and lab.sshd.get("pid") and pid_alive(lab.sshd["pid"]):
        stop_pid(lab.sshd["pid"])
        stopped.append(f"sshd 127.0.0.1:{lab.sshd['port']} (pid {lab.sshd['pid']})")
    (Path(lab.dir) / STATE_FILE).unlink(missing_ok=True)
    return stopped


def _is_replica(port: int, created_as_replica: bool) -> bool:
    """The node's role now; when it cannot tell us (a password or TLS lab), the role it was created with."""
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1, protocol=2,
                         retry=Retry(NoBackoff(), 0))  # redis-py's default retries cost seconds per refusal
    try:
        return client.info("replication").get("role") == "slave"
    except (redis.RedisError, OSError):
        return created_as_replica
    finally:
        client.close()


def load(lab_dir: Path) -> Lab | None:
    path = lab_dir / STATE_FILE
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    raw["nodes"] = tuple(LabNode(**n) for n in raw["nodes"])
    return Lab(**raw)


def _save(lab_dir: Path, lab: Lab) -> None:
    tmp = lab_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(asdict(lab), indent=2))
    os.replace(tmp, lab_dir / STATE_FILE)


def save(lab: Lab) -> None:
    _save(Path(lab.dir), lab)
