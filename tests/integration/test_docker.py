"""On a real Docker Engine: the Docker transport against a container, `lab up/down --docker`, the compose lab,
and end to end on a cluster of containers: backup -> verify -> rolling-restart by container restarts (every master
back in its role, a writer loses nothing) -> restore into the same containers -> data equal.

The engine is checked first (conftest_docker): none reachable fails these tests loudly unless
CLUSTERBAK_SKIP_DOCKER=1. Containers use host networking on 127.0.0.1 ports, or no network at all.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from clusterbak.errors import TransportError
from clusterbak.lab import docker_lab as dlab
from clusterbak.lab.procs import free_base_port
from clusterbak.lab.writer import Writer, missing
from clusterbak.transports.docker import DockerTransport

from .conftest_docker import RUN, RUN_LABEL

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parents[2]


# -- the transport against one container ---------------------------------------------------------------------

@pytest.fixture
def box(docker_client, docker_image):
    """A container from the test image with no network, /data (a volume) owned by uid 999."""
    name = f"clusterbak-test-{RUN}-box-{secrets.token_hex(2)}"
    container = docker_client.containers.run(docker_image, ["sh", "-c", "chown 999:999 /data && exec sleep 600"],
                                             name=name, detach=True, network_mode="none", labels={RUN_LABEL: RUN})
    try:
        yield name
    finally:
        container.remove(force=True, v=True)


def read_all(t: DockerTransport, path: str) -> bytes:
    return b"".join(t.read_chunks(path))


def test_transport_files_commands_and_errors(box, tmp_path):
    t = DockerTransport(box)
    data = os.urandom(5 * 1024 * 1024 + 123)
    (tmp_path / "src").write_bytes(data)
    with open(tmp_path / "src", "rb") as fh:
        assert t.write_from("/data/dump.rdb", fh, mode=0o640) == len(data)
    assert hashlib.sha256(read_all(t, "/data/dump.rdb")).digest() == hashlib.sha256(data).digest()
    st = t.stat("/data/dump.rdb")
    assert (st.size, st.mode & 0o777) == (len(data), 0o640)
    assert t.run("stat -c %u:%g /data/dump.rdb").stdout.strip() == "999:999"  # owned like its directory
    assert t.stat("/data/nothing") is None and t.stat("/data").mode & 0o40000
    assert not t.run("ls /data").stdout.count("clusterbak-tmp")  # the temp file was renamed, not left

    # a stream of unknown size (spooled), a symlink, rename refusing to overwrite
    assert t.write_from("/data/nodes.conf", io.BufferedReader(io.BytesIO(b"vars currentEpoch 6\n"))) == 20
    t.run("ln -s /data/nodes.conf /data/link.conf")
    assert read_all(t, "/data/link.conf") == b"vars currentEpoch 6\n"
    with pytest.raises(TransportError, match=f"docker {box}: cannot rename .* /data/dump.rdb exists"):
        t.rename("/data/nodes.conf", "/data/dump.rdb")
    with pytest.raises(TransportError, match=f"docker {box}: reading /data/missing.rdb: no such file"):
        read_all(t, "/data/missing.rdb")

    # commands: exit status checked, stderr reported, a hang bounded
    assert t.run("echo out; echo err >&2; exit 3", check=False).exit_status == 3
    with pytest.raises(TransportError, match=f"docker {box}: `exit 3` exited 3"):
        t.run("exit 3")
    with pytest.raises(TransportError, match="did not finish within 0.5s"):
        t.run("sleep 3", timeout=0.5)

    # stopped: files can still be read, written and renamed (on a volume); commands cannot run
    t.stop(timeout=5)
    with pytest.raises(TransportError, match=f"docker {box}: the container is exited, not running"):
        t.run("true")
    assert t.write_from("/data/placed.rdb", io.BytesIO(b"restored"), mode=0o600) == 8
    t.rename("/data/nodes.conf", "/data/nodes.conf.before-restore")
    assert read_all(t, "/data/placed.rdb") == b"restored"
    assert t.stat("/data/nodes.conf") is None and t.stat("/data/nodes.conf.before-restore").size == 20
    with pytest.raises(TransportError, match="only files on its volumes can be moved"):
        t.write_from("/etc/not-a-volume", io.BytesIO(b"x"))
    # `docker start NAME` in a command is done through the Engine API, not a CLI in the container
    assert t.run(f"docker start {box}").exit_status == 0
    assert t.run("cat /data/placed.rdb").stdout == "restored"
    t.close()


def test_makedirs_works_on_a_stopped_container(box, docker_client):
    """A restore stops the container before it places an AOF directory on its volume."""
    t = DockerTransport(box)
    docker_client.containers.get(box).stop(timeout=1)
    t.makedirs("/data/appendonlydir")
    assert t.stat("/data/appendonlydir") is not None


def test_missing_container_is_named(docker_client):
    with pytest.raises(TransportError, match="docker clusterbak-no-such-container: no such container"):
        DockerTransport("clusterbak-no-such-container").stat("/data/dump.rdb")


# -- lab up/down --docker --------------------------------------------------------------------------------------

def test_lab_up_and_down_docker_remove_exactly_what_they_made(cli, docker_client, docker_image, tmp_path):
    decoy = docker_client.volumes.create(f"clusterbak-test-{RUN}-decoy", labels={RUN_LABEL: RUN})
    base = free_base_port(2)
    lab_dir = tmp_path / "lab"
    try:
        result, doc = cli.json("lab", "up", "--docker", "--image", docker_image, "--masters", "1", "--replicas", "1",
                               "--base-port", str(base), "--dir", str(lab_dir))
        assert result.exit_code == 0, doc["errors"]
        names = {n["container"] for n in doc["data"]["nodes"]}
        assert redis.Redis(port=base).cluster("info")["cluster_state"] == "ok"
        result, again = cli.json("lab", "up", "--docker", "--image", docker_image, "--dir", str(lab_dir))
        assert result.exit_code == 3 and "a docker lab is recorded" in again["errors"][0]
        result, status = cli.json("lab", "status", "--docker", "--dir", str(lab_dir))
        assert {n["state"] for n in status["data"]["nodes"]} == {"running"}
        result, down = cli.json("lab", "down", "--docker", "--dir", str(lab_dir))
        assert result.exit_code == 0
        assert {r.split(" ", 1)[1] for r in down["data"]["removed"] if r.startswith("container")} == names
        assert len([r for r in down["data"]["removed"] if r.startswith("volume")]) == 2
        assert not [c for c in docker_client.containers.list(all=True) if c.name in names]
        docker_client.volumes.get(decoy.name)  # not ours to remove: still there
    finally:
        if dlab.load(lab_dir):
            dlab.down(lab_dir)
        decoy.remove(force=True)


# -- end to end: backup -> verify -> rolling restart -> restore ------------------------------------------------

def master_digests(ports: list[int]) -> dict[int, tuple[str, int]]:
    out = {}
    for port in ports:
        c = redis.Redis(port=port, decode_responses=True)
        if c.info("replication")["role"] == "master":
            out[port] = (c.execute_command("DEBUG", "DIGEST"), c.dbsize())
    return out


def roles(ports: list[int]) -> dict[int, str]:
    return {p: redis.Redis(port=p).info("replication")["role"] for p in ports}


def test_backup_verify_rolling_restart_restore_end_to_end(docker_lab, docker_client, cli, tmp_path):
    lab = docker_lab.lab
    ports = [n.port for n in lab.nodes]
    ids_before = {n.container: docker_client.containers.get(n.container).id for n in lab.nodes}
    dest = str(tmp_path / "sets")

    # backup through the Docker transport, from the replicas
    digests_at_backup, roles_before = master_digests(ports), roles(ports)
    result, doc = cli.json("backup", "--seed", lab.seed, "--inventory", lab.inventory, "--dest", dest)
    assert result.exit_code == 0, doc["errors"]
    manifest = doc["data"]["manifest"]
    backup_id = doc["data"]["backup_id"]
    assert {s["source"]["role"] for s in manifest["shards"]} == {"replica"}
    assert manifest["totals"]["keys"] == 3000 and len(manifest["nodes"]) == 6
    # each node's config file and users came through the Docker transport too (docs/manifest.md)
    assert {n["config_file"]["source_path"] for n in manifest["nodes"]} == {"/usr/local/etc/redis/redis.conf"}
    assert all(n["acl"]["source"] == "acl-list" and n["modules"] == [] for n in manifest["nodes"])

    # verify re-reads every stored file
    result, verified = cli.json("verify", backup_id, "--dest", dest)
    assert result.exit_code == 0 and verified["data"]["ok"], verified["errors"]

    # rolling restart by container restarts, with a writer running
    started = {n.container: docker_client.containers.get(n.container).attrs["State"]["StartedAt"] for n in lab.nodes}
    writer = Writer("127.0.0.1", lab.nodes[0].port, "docker-rolling")
    writer.start()
    time.sleep(0.5)
    result, rolled = cli.json("rolling-restart", "--seed", lab.seed, "--inventory", lab.inventory, "--yes")
    time.sleep(0.5)
    stats = writer.finish()
    assert result.exit_code == 0, rolled["errors"]
    assert roles(ports) == roles_before  # every master back in its role
    restarted = {n.container for n in lab.nodes
                 if docker_client.containers.get(n.container).attrs["State"]["StartedAt"] != started[n.container]}
    assert restarted == set(started)  # every container was restarted
    assert stats.acked > 50 and stats.failed == []
    assert missing("127.0.0.1", lab.nodes[0].port, writer.acked) == []  # no acknowledged write lost

    # restore the backup into the same containers: the data is the backup's again, the writer's keys gone
    result, restored = cli.json("restore", backup_id, "--dest", dest, "--inventory", lab.inventory, "--yes")
    assert result.exit_code == 0, restored["errors"]
    assert {n.container: docker_client.containers.get(n.container).id for n in lab.nodes} == ids_before
    assert roles(ports) == roles_before
    assert master_digests(ports) == digests_at_backup


# -- the compose file itself -----------------------------------------------------------------------------------

def compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return None


def free_port_prefix() -> str:
    from clusterbak.lab.procs import port_free

    for prefix in range(2001, 2999, 7):
        if all(port_free(int(f"{prefix}{i}")) and port_free(int(f"{prefix}{i}") + 10000) for i in range(1, 7)):
            return str(prefix)
    raise AssertionError("no free port prefix")


def test_compose_lab_comes_up_is_discovered_and_backed_up(docker_client, docker_image, cli, tmp_path):
    compose = compose_command()
    if compose is None:
        pytest.skip("neither docker-compose nor `docker compose` is installed: compose/lab.yml not exercised")
    prefix, project = free_port_prefix(), f"clusterbak-test-{RUN}-compose"
    env = {**os.environ, "CLUSTERBAK_REDIS_IMAGE": docker_image, "CLUSTERBAK_LAB_PORT_PREFIX": prefix,
           "CLUSTERBAK_LAB_NAME": project}
    base = [*compose, "-f", str(ROOT / "compose" / "lab.yml"), "-p", project]
    try:
        up = subprocess.run([*base, "up", "-d"], env=env, capture_output=True, text=True, timeout=300)
        assert up.returncode == 0, up.stderr[-2000:]
        init = docker_client.containers.get(f"{project}-cluster-init")
        assert init.wait(timeout=120)["StatusCode"] == 0, init.logs().decode()[-2000:]
        seed = f"127.0.0.1:{prefix}1"
        inventory = tmp_path / "inventory.toml"
        result, doc = cli.json("inventory", "--docker", "--seed", seed, "--out", str(inventory))
        assert result.exit_code == 0, doc["errors"]
        assert sorted(n["container"] for n in doc["data"]["nodes"]) == [f"{project}-redis-{i}" for i in range(1, 7)]
        with RedisCluster(host="127.0.0.1", port=int(f"{prefix}1")) as client:
            client.set("k{1}", "v")
        result, doc = cli.json(
            "backup", "--seed", seed, "--inventory", str(inventory), "--dest", str(tmp_path / "sets")
        )
        assert result.exit_code == 0, doc["errors"]
        assert doc["data"]["manifest"]["totals"]["keys"] == 1
    finally:
        subprocess.run([*base, "down", "-v", "--remove-orphans"], env=env, capture_output=True, timeout=300)
    left = docker_client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"})
    assert left == [] and docker_client.volumes.list(filters={"label": f"com.docker.compose.project={project}"}) == []
