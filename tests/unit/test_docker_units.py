"""The Docker transport's pure parts (tar streams, stat, command parsing, discovery matching, service actions),
and its read/fetch logic against a fake engine. No Docker Engine is needed here; tests/integration/test_docker.py
runs the real thing."""

from __future__ import annotations

import hashlib
import io
import random
import stat
import tarfile
import tomllib
from pathlib import Path

import pytest

from clusterbak.errors import InventoryError, TransportError
from clusterbak.lab.docker_lab import NODE_CONF, DockerLab, DockerNode, render_inventory
from clusterbak.model.inventory import parse_inventory
from clusterbak.transports.base import ConnectionDropped
from clusterbak.transports.docker import DockerTransport
from clusterbak.transports.docker_discover import Served, match, redis_port
from clusterbak.transports.dockertar import TarReader, mtime_of, sized, tar_stream, unix_mode

ROOT = Path(__file__).resolve().parents[2]


def tar_bytes(name: str, data: bytes, fmt: int, **attrs) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        for k, v in attrs.items():
            setattr(info, k, v)
        tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def chunked(data: bytes, seed: int = 1) -> list[bytes]:
    rng, out, pos = random.Random(seed), [], 0
    while pos < len(data):
        n = rng.choice([1, 7, 511, 512, 513, 4096, 65536])
        out.append(data[pos:pos + n])
        pos += n
    return out


@pytest.mark.parametrize(("fmt", "name"), [(tarfile.USTAR_FORMAT, "dump.rdb"), (tarfile.GNU_FORMAT, "dump.rdb"),
                                           (tarfile.GNU_FORMAT, "d/" * 80 + "long.rdb"),
                                           (tarfile.PAX_FORMAT, "d/" * 80 + "long.rdb")])
def test_tar_reader_reads_one_member_across_any_chunking(fmt, name):
    data = random.Random(3).randbytes(300_000)
    reader = TarReader(iter(chunked(tar_bytes(name, data, fmt, uid=999, gid=998))))
    member = reader.next_member()
    assert (member.name, member.size, member.uid, member.gid) == (name, len(data), 999, 998)
    got = b""
    while len(got) < member.size and (piece := reader.take(member.size - len(got))):
        got += piece
    assert got == data
    assert reader.next_member() is None


def test_tar_reader_on_a_truncated_stream_raises_eof():
    raw = tar_bytes("dump.rdb", b"x" * 5000, tarfile.PAX_FORMAT)
    reader = TarReader(iter([raw[:2000]]))
    member = reader.next_member()
    with pytest.raises(EOFError):
        reader.exactly(member.size)


def test_tar_stream_is_a_valid_archive_with_owner_and_mode():
    body = random.Random(5).randbytes(10_000)
    info = tarfile.TarInfo("dump.rdb.clusterbak-tmp-1")
    info.size, info.mode, info.uid, info.gid = len(body), 0o640, 999, 999
    raw = b"".join(tar_stream(info, io.BytesIO(body)))
    assert len(raw) % tarfile.BLOCKSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        (member,) = tf.getmembers()
        assert (member.name, member.mode, member.uid, member.size) == (info.name, 0o640, 999, len(body))
        assert tf.extractfile(member).read() == body


def test_tar_stream_refuses_a_source_that_changed_size():
    info = tarfile.TarInfo("x")
    info.size = 10
    with pytest.raises(TransportError, match="gave 5 bytes, not the 10"):
        b"".join(tar_stream(info, io.BytesIO(b"12345")))


def test_sized_uses_a_regular_file_as_is_and_spools_a_stream(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abcdef")
    with open(path, "rb") as fh:
        fh.read(2)
        with sized(fh) as (body, size):
            assert body is fh and size == 4
    with sized(io.BufferedReader(io.BytesIO(b"z" * 3_000_000))) as (body, size):
        assert size == 3_000_000 and body.read() == b"z" * 3_000_000


def test_engine_stat_modes_and_times():
    assert unix_mode(0o640) == stat.S_IFREG | 0o640
    assert unix_mode((1 << 31) | 0o755) == stat.S_IFDIR | 0o755
    assert stat.S_ISLNK(unix_mode((1 << 27) | 0o777))
    assert unix_mode((1 << 20) | (1 << 31) | 0o777) == stat.S_IFDIR | stat.S_ISVTX | 0o777
    assert mtime_of("2024-05-01T12:00:00.123456789Z") == pytest.approx(1714564800.123456)
    assert mtime_of("2024-05-01T14:00:00+02:00") == 1714564800.0
    assert mtime_of("") == 0.0


class FakeContainer:
    def __init__(self, archives, status="running"):
        self.archives = list(archives)
        self.status = status
        self.calls = 0

    def get_archive(self, path, chunk_size):
        self.calls += 1
        return (chunk for chunk in self.archives.pop(0)), {}  # a generator, as the SDK returns


class FakeClient:
    def __init__(self, container):
        self.containers = self
        self.container = container

    def get(self, name):
        return self.container

    def close(self):
        pass


class ListSink:
    opened: list[ListSink] = []

    def __init__(self):
        self.data, self.state = [], "open"
        ListSink.opened.append(self)

    def write(self, chunk):
        self.data.append(chunk)

    def close(self):
        self.state = "closed"

    def abort(self):
        self.state = "aborted"


def test_read_chunks_reports_a_short_archive_as_a_dropped_connection():
    raw = tar_bytes("dump.rdb", b"y" * 100_000, tarfile.PAX_FORMAT)
    t = DockerTransport("redis-a", client=FakeClient(FakeContainer([chunked(raw[:60_000])])))
    with pytest.raises(ConnectionDropped, match=r"docker redis-a: read of /data/dump.rdb ended after \d+ of 100000"):
        b"".join(t.read_chunks("/data/dump.rdb"))


def test_fetch_restarts_from_zero_into_a_fresh_sink_and_follows_symlinks():
    data = random.Random(9).randbytes(200_000)
    good = tar_bytes("dump.rdb", data, tarfile.PAX_FORMAT)
    link = tar_bytes("dump.rdb", b"", tarfile.PAX_FORMAT, type=tarfile.SYMTYPE, linkname="real/dump.rdb")
    container = FakeContainer([chunked(good[:70_000]), chunked(link), chunked(good)])
    t = DockerTransport("redis-a", client=FakeClient(container), retry_wait=0)
    ListSink.opened = []
    assert t.fetch("/data/dump.rdb", ListSink) == len(data)
    first, second = ListSink.opened
    assert first.state == "aborted" and second.state == "closed"
    assert hashlib.sha256(b"".join(second.data)).digest() == hashlib.sha256(data).digest()
    assert container.calls == 3


def test_a_directory_is_not_a_file():
    raw = tar_bytes("data", b"", tarfile.PAX_FORMAT, type=tarfile.DIRTYPE)
    t = DockerTransport("redis-a", client=FakeClient(FakeContainer([[raw]])))
    with pytest.raises(TransportError, match="docker redis-a: /data is not a regular file"):
        list(t.read_chunks("/data"))


def test_run_on_a_stopped_container_names_it():
    t = DockerTransport("redis-a", client=FakeClient(FakeContainer([], status="exited")))
    with pytest.raises(TransportError, match="docker redis-a: the container is exited, not running"):
        t.run("true")


def test_engine_unreachable_names_the_container(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(TransportError, match=r"docker redis-a: cannot reach the Docker Engine at unix:///nonexistent"):
        DockerTransport("redis-a").stat("/data/dump.rdb")


def test_no_container_given_is_an_error():
    with pytest.raises(TransportError, match="no container given"):
        DockerTransport(None)


def test_only_docker_lifecycle_commands_naming_this_container_bypass_exec():
    t = DockerTransport("redis-a", client=FakeClient(FakeContainer([])))
    assert t._lifecycle("docker restart redis-a") == "restart"
    assert t._lifecycle("docker  stop 'redis-a'") == "stop"
    assert t._lifecycle("docker start redis-b") is None
    assert t._lifecycle("docker rm redis-a") is None
    assert t._lifecycle("redis-cli shutdown") is None
    assert t._lifecycle("docker restart 'unbalanced") is None


def test_redis_port_from_command_line_config_or_default():
    assert redis_port(["redis-server", "/etc/redis.conf", "--port", "7001"], lambda p: "") == 7001
    assert redis_port(["docker-entrypoint.sh", "redis-server", "--port=7002"], lambda p: "") == 7002
    assert redis_port(["redis-server", "/etc/r.conf"], lambda p: "bind 0.0.0.0\nport 7003\n") == 7003
    assert redis_port(["/usr/local/bin/redis-server"], lambda p: "") == 6379
    assert redis_port(["nginx", "-g", "daemon off;"], lambda p: "") is None


def test_match_by_address_then_port_and_refuse_ambiguity():
    served = [Served("a", frozenset({7001}), frozenset()), Served("b", frozenset({7002}), frozenset()),
              Served("c", frozenset(), frozenset({"172.20.0.5:6379"})), Served("d", frozenset({7002}), frozenset())]
    assert match(["127.0.0.1:7001", "172.20.0.5:6379"], served) == {"127.0.0.1:7001": "a", "172.20.0.5:6379": "c"}
    with pytest.raises(InventoryError, match=r"127.0.0.1:7002: served by several containers \(b, d\).*"
                                             r"127.0.0.1:7009: no running container"):
        match(["127.0.0.1:7002", "127.0.0.1:7009"], served)


def test_container_placeholder_in_commands():
    inv = parse_inventory(
        tomllib.loads(
            '[defaults]\ntransport = "docker"\nrestart_command = "docker restart {container}"\n'
            '[nodes."127.0.0.1:7001"]\ncontainer = "r1"\n'
        ),
        "inv",
    )
    assert inv.access("127.0.0.1:7001").command("restart_command") == "docker restart r1"


def test_compose_files_match_the_sdk_lab():
    assert (ROOT / "compose" / "redis.conf").read_text() == NODE_CONF
    lab_yml = (ROOT / "compose" / "lab.yml").read_text()
    assert "${CLUSTERBAK_REDIS_IMAGE:-redis:7.4}" in lab_yml and "network_mode: host" in lab_yml
    inv = parse_inventory(tomllib.loads((ROOT / "compose" / "inventory.toml").read_text()), "compose/inventory.toml")
    assert [(n.address, n.container) for n in inv.nodes] == [(f"127.0.0.1:700{i}", f"clusterbak-redis-{i}")
                                                             for i in range(1, 7)]
    assert inv.nodes[0].command("stop_command") == "docker stop clusterbak-redis-1"


def test_lab_inventory_parses():
    lab = DockerLab("/x", "id", "img", 1, 1, 7000, (DockerNode(7000, "master", "c0", "v0"),
                                                    DockerNode(7001, "replica", "c1", "v1")), "/x/inv.toml")
    inv = parse_inventory(tomllib.loads(render_inventory(lab)), "inv")
    assert inv.access("127.0.0.1:7001").command("start_command") == "docker start c1"
    assert inv.access("127.0.0.1:7000").data_dir == "/data"
