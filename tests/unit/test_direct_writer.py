"""A backup set's large local files go past the page cache (O_DIRECT), byte for byte the same (storage/direct.py).

Real files on the test's own filesystem; the O_DIRECT flag is read back from /proc/self/fdinfo, as `lsof` would."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from clusterbak.storage.direct import CHUNK, DIRECT_FILESYSTEMS, ENV, DirectWriter, filesystem_type
from clusterbak.storage.local import LocalFile


def _flags(fd: int) -> int:
    for line in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines():
        if line.startswith("flags:"):
            return int(line.split()[1], 8)
    raise AssertionError("no flags line")


def _direct_capable(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        kind = filesystem_type(fd)
    finally:
        os.close(fd)
    if kind not in DIRECT_FILESYSTEMS:
        pytest.skip(f"{path} is on {kind!r}, where clusterbak keeps buffered writes (direct only on "
                    f"{', '.join(sorted(DIRECT_FILESYSTEMS))})")


def _pieces(data: bytes, sizes: list[int]):
    at, k = 0, 0
    while at < len(data):
        n = sizes[k % len(sizes)]
        yield data[at:at + n]
        at, k = at + n, k + 1


@pytest.mark.parametrize("size", [0, 1, 4095, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 12_345])
def test_every_size_reads_back_byte_for_byte(tmp_path, size):
    data = os.urandom(size)
    path = tmp_path / "f"
    writer = DirectWriter(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for piece in _pieces(data, [7_000, 2_500_000, 1, 65_536]):
        writer.write(memoryview(piece))
    writer.finish()
    writer.close()
    assert path.read_bytes() == data


def test_a_large_set_file_is_written_past_the_page_cache(tmp_path):
    _direct_capable(tmp_path)
    data = os.urandom(2 * CHUNK + 999)
    path = tmp_path / "shard.rdb"
    f = LocalFile(path)
    f.write(data[:CHUNK + 10])
    assert _flags(f._file.fd) & os.O_DIRECT, "a file past its first MiB should be open with O_DIRECT"
    f.write(data[CHUNK + 10:])
    f.close()
    assert path.read_bytes() == data
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_small_file_stays_buffered(tmp_path):
    path = tmp_path / "nodes.conf"
    f = LocalFile(path)
    f.write(b"x" * 5000)
    assert not _flags(f._file.fd) & os.O_DIRECT
    f.close()
    assert f._file.direct is None
    assert path.read_bytes() == b"x" * 5000


def test_the_operator_can_turn_it_off(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, "off")
    data = os.urandom(2 * CHUNK + 1)
    path = tmp_path / "f"
    f = LocalFile(path)
    f.write(data)
    assert not _flags(f._file.fd) & os.O_DIRECT
    f.close()
    assert f._file.direct is False
    assert path.read_bytes() == data


def test_tmpfs_stays_buffered_and_whole(tmp_path):
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK):
        pytest.skip("no writable /dev/shm (tmpfs) on this machine")
    path = shm / f"clusterbak-direct-test-{os.getpid()}"
    data = os.urandom(2 * CHUNK + 77)
    try:
        f = LocalFile(path)
        f.write(data)
        f.close()
        assert f._file.direct is False
        assert path.read_bytes() == data
    finally:
        path.unlink(missing_ok=True)


def test_an_aborted_file_is_removed(tmp_path):
    path = tmp_path / "f"
    f = LocalFile(path)
    f.write(os.urandom(CHUNK + 5))
    f.abort()
    assert not path.exists()


def test_a_failed_write_still_closes_cleanly():
    """ENOSPC mid-file (here /dev/full): the error is the write's, and closing after it raises nothing else."""
    writer = DirectWriter(os.open("/dev/full", os.O_WRONLY))
    with pytest.raises(OSError) as failed:
        writer.write(os.urandom(2 * CHUNK))
    assert failed.value.errno == errno.ENOSPC
    writer.close()


def _refusing_direct(monkeypatch, how: str):
    """The kernel's answer to a direct write, simulated (no filesystem here refuses an aligned one): `einval`
    refuses it whole, `short` takes only its first 8 KiB. Buffered writes go through untouched."""
    real = os.write
    seen = {"direct_writes": 0}

    def write(fd, data):
        if _flags(fd) & os.O_DIRECT:
            seen["direct_writes"] += 1
            if how == "einval":
                raise OSError(errno.EINVAL, "Invalid argument")
            return real(fd, memoryview(data)[:8192])
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)
    return seen


@pytest.mark.parametrize("how", ["einval", "short"])
def test_a_refused_direct_write_finishes_the_file_buffered(tmp_path, monkeypatch, how):
    _direct_capable(tmp_path)
    seen = _refusing_direct(monkeypatch, how)
    data = os.urandom(3 * CHUNK + 4321)
    path = tmp_path / "f"
    f = LocalFile(path)
    f.write(data)
    f.close()
    assert seen["direct_writes"] == 1  # tried once, then buffered for good
    assert f._file.direct is False
    assert path.read_bytes() == data
