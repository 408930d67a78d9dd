"""LocalTransport and SshTransport against the real filesystem and a real OpenSSH sshd on loopback."""

from __future__ import annotations

import hashlib
import io
import os
import stat as stat_mod
import subprocess
from pathlib import Path

import pytest

from clusterbak.errors import TransportError
from clusterbak.transports.base import ConnectionDropped
from clusterbak.transports.local import LocalTransport
from clusterbak.transports.ssh import SshTransport

from .conftest_sshd import leftovers

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("data") / "dump.rdb"
    data = os.urandom(20 * MiB)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


class FileSink:
    """Writes `<final>.part`, renames it to `final` on close, deletes it on abort; records every instance."""

    def __init__(self, final: Path, log: list[FileSink], on_write=None) -> None:
        self.final, self.part = final, final.with_name(final.name + ".part")
        self.f = open(self.part, "wb")
        self.written, self.state, self.on_write = 0, "open", on_write
        log.append(self)

    def write(self, chunk: bytes) -> None:
        self.f.write(chunk)
        self.written += len(chunk)
        if self.on_write:
            self.on_write(self)

    def close(self) -> None:
        self.f.close()
        os.replace(self.part, self.final)
        self.state = "closed"

    def abort(self) -> None:
        self.f.close()
        self.part.unlink(missing_ok=True)
        self.state = "aborted"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(params=["local", "ssh"])
def transport(request, ssh_transport):
    if request.param == "local":
        t = LocalTransport()
        yield t
        t.close()
    else:
        yield ssh_transport()


# -- both transports ------------------------------------------------------------------------------------------


def test_fetch_round_trip_of_20_mib(transport, big_file, tmp_path) -> None:
    src, digest = big_file
    sinks: list[FileSink] = []
    n = transport.fetch(str(src), lambda: FileSink(tmp_path / "copy.rdb", sinks))
    assert n == src.stat().st_size == 20 * MiB
    assert sha256(tmp_path / "copy.rdb") == digest
    assert [s.state for s in sinks] == ["closed"]
    assert leftovers(tmp_path) == []


def test_write_from_round_trip_sets_mode(transport, big_file, tmp_path) -> None:
    src, digest = big_file
    dst = tmp_path / "restored.rdb"
    with open(src, "rb") as f:
        assert transport.write_from(str(dst), f, mode=0o600) == 20 * MiB
    assert sha256(dst) == digest
    assert stat_mod.S_IMODE(dst.stat().st_mode) == 0o600
    st = transport.stat(str(dst))
    assert st is not None and st.size == 20 * MiB and stat_mod.S_IMODE(st.mode) == 0o600 and stat_mod.S_ISREG(st.mode)
    assert leftovers(tmp_path) == []


def test_missing_file_raises_naming_the_path(transport, tmp_path) -> None:
    missing = str(tmp_path / "nope" / "dump.rdb")
    with pytest.raises(TransportError, match=r"cannot read .*nope/dump\.rdb") as err:
        list(transport.read_chunks(missing))
    assert transport.where in str(err.value)
    sinks: list[FileSink] = []
    with pytest.raises(TransportError, match="nope/dump.rdb"):
        transport.fetch(missing, lambda: FileSink(tmp_path / "x", sinks))
    assert [s.state for s in sinks] == ["aborted"] and leftovers(tmp_path) == []
    assert transport.stat(missing) is None


def test_run_exit_codes(transport) -> None:
    ok = transport.run("echo out; echo err >&2")
    assert (ok.exit_status, ok.stdout, ok.stderr) == (0, "out\n", "err\n")
    bad = transport.run("echo first >&2; echo 'last words' >&2; exit 7", check=False)
    assert bad.exit_status == 7
    with pytest.raises(TransportError, match=r"exit 7`? exited 7: last words") as err:
        transport.run("echo 'last words' >&2; exit 7")
    assert transport.where in str(err.value)
    with pytest.raises(TransportError, match="did not finish within"):
        transport.run("sleep 5", timeout=0.5)


def test_write_from_is_atomic_when_the_source_fails(transport, tmp_path) -> None:
    dst = tmp_path / "nodes.conf"
    dst.write_bytes(b"old contents\n")

    class Failing(io.RawIOBase):
        def __init__(self) -> None:
            self.reads = 0

        def read(self, n: int = -1) -> bytes:
            self.reads += 1
            assert dst.read_bytes() == b"old contents\n"  # never visible half-written
            if self.reads > 3:
                raise OSError("source broke")
            return os.urandom(MiB)

    with pytest.raises(OSError, match="source broke"):
        transport.write_from(str(dst), Failing())  # type: ignore[arg-type]
    assert dst.read_bytes() == b"old contents\n"
    assert leftovers(tmp_path) == []


def test_write_into_a_missing_directory_names_the_path(transport, tmp_path) -> None:
    with pytest.raises(TransportError, match="nodir/x.rdb"):
        transport.write_from(str(tmp_path / "nodir" / "x.rdb"), io.BytesIO(b"data"))


def test_read_of_a_file_renamed_over_keeps_the_old_inode(transport, tmp_path) -> None:
    path = tmp_path / "dump.rdb"
    old = os.urandom(8 * MiB)
    path.write_bytes(old)
    chunks = transport.read_chunks(str(path), chunk_size=MiB)
    got = [next(chunks)]  # the file is open now
    new = tmp_path / "temp-123.rdb"
    new.write_bytes(b"a newer, shorter save")
    os.replace(new, path)  # what a finishing BGSAVE does
    got.extend(chunks)
    assert b"".join(got) == old


def test_rename_moves_aside_but_never_over(transport, tmp_path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("A")
    transport.rename(str(a), str(b))
    assert not a.exists() and b.read_text() == "A"
    a.write_text("A2")
    with pytest.raises(TransportError, match="exists"):
        transport.rename(str(a), str(b))
    assert b.read_text() == "A" and a.read_text() == "A2"


def test_makedirs_creates_parents_and_accepts_existing(transport, tmp_path) -> None:
    target = tmp_path / "data" / "appendonlydir"
    transport.makedirs(str(target))
    transport.makedirs(str(target))
    assert target.is_dir()


# -- ssh only ---------------------------------------------------------------------------------------------


def test_ssh_prefers_aes128_gcm_and_sets_nodelay(ssh_transport) -> None:
    import socket

    t = ssh_transport().connect()
    assert t.remote_cipher == t.local_cipher == "aes128-gcm@openssh.com"
    assert t.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_unknown_host_key_refused_then_accepted_with_flag(sshd_lab, ssh_transport, tmp_path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text("")
    with pytest.raises(TransportError, match=r"not in .*known_hosts.*--accept-new-host-keys") as err:
        ssh_transport(known_hosts=known).run("true")
    assert f"[127.0.0.1]:{sshd_lab.port}" in str(err.value)
    assert known.read_text() == ""

    assert ssh_transport(known_hosts=known, accept_new_host_keys=True).run("echo hi").stdout == "hi\n"
    assert known.read_text().splitlines() == [sshd_lab.known_hosts_line]
    assert ssh_transport(known_hosts=known).run("echo again").stdout == "again\n"  # now known, no flag needed


def test_missing_known_hosts_file_is_created_with_accept_new(sshd_lab, ssh_transport, tmp_path) -> None:
    known = tmp_path / "sub" / "known_hosts"
    with pytest.raises(TransportError, match="accept-new-host-keys"):
        ssh_transport(known_hosts=known).run("true")
    ssh_transport(known_hosts=known, accept_new_host_keys=True).run("true")
    assert known.read_text().splitlines() == [sshd_lab.known_hosts_line]


def test_changed_host_key_refused_even_with_accept_new(sshd_lab, ssh_transport, tmp_path) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    fake = " ".join(other.with_suffix(".pub").read_text().split()[:2])
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd_lab.port} {fake}\n")
    for accept in (False, True):
        with pytest.raises(TransportError, match=r"host key CHANGED.*ssh-keygen -R") as err:
            ssh_transport(known_hosts=known, accept_new_host_keys=accept).run("true")
        assert not isinstance(err.value, ConnectionDropped)  # never retried
    assert known.read_text() == f"[127.0.0.1]:{sshd_lab.port} {fake}\n"


def test_missing_key_file_names_the_path(sshd_lab, tmp_path) -> None:
    missing = tmp_path / "no_such_key"
    with pytest.raises(TransportError, match=f"key file {missing} does not exist"):
        SshTransport(sshd_lab.host, port=sshd_lab.port, key_file=missing, ssh_config_path=None)


def test_wrong_key_is_an_authentication_error(sshd_lab, ssh_transport, tmp_path) -> None:
    other = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    with pytest.raises(TransportError, match=f"authentication as {sshd_lab.user} failed with {other}"):
        ssh_transport(key_file=other).run("true")


def test_ssh_config_supplies_hostname_port_user_and_key(sshd_lab, tmp_path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host redis-a\n  HostName 127.0.0.1\n  Port {sshd_lab.port}\n  User {sshd_lab.user}\n"
        f"  IdentityFile {sshd_lab.key_file}\n"
    )
    with SshTransport("redis-a", known_hosts=sshd_lab.known_hosts, ssh_config_path=str(config)) as t:
        assert t.where == f"ssh {sshd_lab.user}@127.0.0.1:{sshd_lab.port}"
        assert t.run("echo via-config").stdout == "via-config\n"


def test_dropped_connection_restarts_the_file_into_a_fresh_sink(ssh_transport, big_file, tmp_path) -> None:
    src, digest = big_file
    retries: list[tuple[str, int]] = []
    t = ssh_transport(on_retry=lambda path, attempt, exc: retries.append((path, attempt)))
    first_link = t.connect()

    def cut_after_first_mib(sink: FileSink) -> None:
        if len(sinks) == 1 and sink.written >= MiB and first_link.is_active():
            first_link.close()  # the network goes away mid-transfer

    sinks: list[FileSink] = []
    n = t.fetch(str(src), lambda: FileSink(tmp_path / "copy.rdb", sinks, cut_after_first_mib))
    assert n == 20 * MiB and sha256(tmp_path / "copy.rdb") == digest
    assert [s.state for s in sinks] == ["aborted", "closed"]
    assert sinks[0].written < 20 * MiB and retries == [(str(src), 1)]
    assert t.paramiko_transport is not first_link and t.paramiko_transport.is_active()
    assert leftovers(tmp_path) == []


def test_gives_up_after_the_configured_attempts(ssh_transport, big_file, tmp_path) -> None:
    src, _ = big_file
    t = ssh_transport(attempts=3)

    def always_cut(sink: FileSink) -> None:
        if sink.written >= MiB and t.paramiko_transport is not None:
            t.paramiko_transport.close()

    sinks: list[FileSink] = []
    with pytest.raises(ConnectionDropped, match=r"gave up on .*dump\.rdb after 3 attempts"):
        t.fetch(str(src), lambda: FileSink(tmp_path / "copy.rdb", sinks, always_cut))
    assert [s.state for s in sinks] == ["aborted"] * 3
    assert not (tmp_path / "copy.rdb").exists() and leftovers(tmp_path) == []


def test_sink_errors_are_not_retried(ssh_transport, big_file, tmp_path) -> None:
    src, _ = big_file

    def bad_disk(sink: FileSink) -> None:
        raise OSError("disk full")

    sinks: list[FileSink] = []
    with pytest.raises(OSError, match="disk full"):
        ssh_transport().fetch(str(src), lambda: FileSink(tmp_path / "copy.rdb", sinks, bad_disk))
    assert [s.state for s in sinks] == ["aborted"]


def test_paths_with_spaces_and_quotes(transport, tmp_path) -> None:
    odd = tmp_path / "it's a \"dir\" $HOME"
    odd.mkdir()
    path = odd / "dump 1.rdb"
    transport.write_from(str(path), io.BytesIO(b"payload"), mode=0o644)
    assert b"".join(transport.read_chunks(str(path))) == b"payload"
    assert transport.stat(str(path)).size == 7


def test_a_stalled_read_times_out_is_retried_and_gives_up(ssh_transport, tmp_path) -> None:
    fifo = tmp_path / "stuck.rdb"
    os.mkfifo(fifo)  # opening it for reading blocks until a writer comes: no byte ever arrives
    t = ssh_transport(io_timeout=0.5, attempts=2)
    link = t.connect()
    sinks: list[FileSink] = []
    try:
        with pytest.raises(ConnectionDropped, match=r"no data for 0.5s while reading .*stuck\.rdb.*after 2 attempts"):
            t.fetch(str(fifo), lambda: FileSink(tmp_path / "copy.rdb", sinks))
        assert [s.state for s in sinks] == ["aborted", "aborted"]
        assert t.paramiko_transport is link and link.is_active()  # a stalled channel is not a dead connection
    finally:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # release the blocked remote readers
        os.close(fd)
