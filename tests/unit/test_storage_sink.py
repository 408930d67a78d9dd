from __future__ import annotations

import hashlib
import os
import random
import stat
from pathlib import Path

import pytest

from clusterbak.errors import StepFailed, UsageError, VerifyError
from clusterbak.storage.repository import open_stored_as
from clusterbak.storage.sink import (
    SAMPLE_BYTES,
    FileSink,
    StoredFile,
    choose_compression,
    hash_file,
    iter_stored_file,
    stored_name,
)

# Mixed payload: compressible text and incompressible bytes, in uneven chunks.
PAYLOAD = b"".join([b"redis cluster backup " * 5000, os.urandom(300_000), b"\x00" * 200_000, b"tail"])
CHUNKS = [PAYLOAD[i : i + 65_537] for i in range(0, len(PAYLOAD), 65_537)]


def write(path: Path, compress: str, chunks: list[bytes] = CHUNKS) -> StoredFile:
    sink = FileSink(path, compress=compress)
    for c in chunks:
        sink.write(c)
    return sink.close()


@pytest.mark.parametrize("compress", ["zstd", "none"])
def test_round_trip(tmp_path: Path, compress: str) -> None:
    path = tmp_path / f"dump.rdb.{compress}"
    stored = write(path, compress)
    on_disk = path.read_bytes()
    assert stored == StoredFile(
        path=str(path),
        raw_size=len(PAYLOAD),
        stored_size=len(on_disk),
        sha256_stored=hashlib.sha256(on_disk).hexdigest(),
        compression=compress,
    )
    assert hash_file(path) == stored.sha256_stored
    assert b"".join(iter_stored_file(path, compress, chunk=10_000)) == PAYLOAD
    if compress == "zstd":
        assert stored.stored_size < stored.raw_size
        assert on_disk[:4] == b"\x28\xb5\x2f\xfd"  # zstd frame magic
    else:
        assert on_disk == PAYLOAD


@pytest.mark.parametrize("compress", ["zstd", "none"])
def test_empty_stream_round_trips(tmp_path: Path, compress: str) -> None:
    stored = write(tmp_path / "empty", compress, chunks=[])
    assert stored.raw_size == 0
    assert b"".join(iter_stored_file(tmp_path / "empty", compress)) == b""


def test_mode_is_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write(tmp_path / "f", "none", [b"x"])
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o600


def test_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"precious")
    with pytest.raises(StepFailed, match="cannot create"):
        FileSink(tmp_path / "f", compress="none")
    assert (tmp_path / "f").read_bytes() == b"precious"


def test_abort_removes_the_partial_file(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "partial", compress="zstd")
    sink.write(PAYLOAD)
    sink.abort()
    assert not (tmp_path / "partial").exists()
    sink.abort()  # idempotent
    with pytest.raises(RuntimeError):
        sink.write(b"more")


def test_exception_in_context_aborts(tmp_path: Path) -> None:
    with pytest.raises(KeyError):
        with FileSink(tmp_path / "partial", compress="none") as sink:
            sink.write(b"half")
            raise KeyError("boom")
    assert not (tmp_path / "partial").exists()
    with FileSink(tmp_path / "ok", compress="none") as sink:
        sink.write(b"whole")
    assert (tmp_path / "ok").read_bytes() == b"whole"


def test_abort_after_close_keeps_the_file(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "f", compress="none")
    sink.write(b"data")
    sink.close()
    sink.abort()
    assert (tmp_path / "f").read_bytes() == b"data"


def test_unknown_compression_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        FileSink(tmp_path / "f", compress="gzip")
    with pytest.raises(UsageError):
        iter_stored_file(tmp_path / "f", "gzip")
    assert not (tmp_path / "f").exists()


CORRUPTIONS = {
    "cut 100": lambda d: d[:-100],
    "cut checksum": lambda d: d[:-4],
    "frame header only": lambda d: d[:3],
    "empty file": lambda d: b"",
    "flipped byte": lambda d: d[: len(d) // 2] + bytes([d[len(d) // 2] ^ 0xFF]) + d[len(d) // 2 + 1 :],
    "trailing junk": lambda d: d + b"junk",
}


@pytest.mark.parametrize("damage", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_truncated_or_corrupt_zstd_raises(tmp_path: Path, damage) -> None:  # type: ignore[no-untyped-def]
    write(tmp_path / "good.zst", "zstd")
    (tmp_path / "bad.zst").write_bytes(damage((tmp_path / "good.zst").read_bytes()))
    with pytest.raises(VerifyError, match=r"bad\.zst: (corrupt|truncated)"):
        b"".join(iter_stored_file(tmp_path / "bad.zst", "zstd"))


def test_concatenated_zstd_frames_are_read_whole(tmp_path: Path) -> None:
    write(tmp_path / "a", "zstd", [b"first "])
    write(tmp_path / "b", "zstd", [b"second"])
    (tmp_path / "ab").write_bytes((tmp_path / "a").read_bytes() + (tmp_path / "b").read_bytes())
    assert b"".join(iter_stored_file(tmp_path / "ab", "zstd", chunk=5)) == b"first second"


def _text(n: int) -> bytes:
    words = [b"alpha", b"beta", b"gamma", b"delta", b'"user_id":', b"1234", b"{", b"}"]
    rng = random.Random(3)
    return b" ".join(rng.choice(words) for _ in range(n // 5))[:n]


def test_auto_stores_random_bytes_raw_and_text_compressed():
    assert choose_compression(os.urandom(SAMPLE_BYTES)) == "none"
    assert choose_compression(_text(SAMPLE_BYTES)) == "zstd"
    assert choose_compression(b"") == "none"


@pytest.mark.parametrize(("make", "expect"), [(os.urandom, "none"), (_text, "zstd")])
@pytest.mark.parametrize("size", [1000, 3 * SAMPLE_BYTES + 17])
def test_choosing_sink_names_the_file_for_its_choice_and_round_trips(tmp_path, make, expect, size):
    data = make(size)
    sink = open_stored_as(lambda c: tmp_path / stored_name("f.rdb", c), "auto")
    for i in range(0, len(data), 65536):
        sink.write(data[i : i + 65536])
    stored = sink.close()
    assert stored.compression == expect and sink.target == tmp_path / stored_name("f.rdb", expect)
    assert [p.name for p in tmp_path.iterdir()] == [sink.target.name]
    assert b"".join(iter_stored_file(sink.target, expect)) == data and stored.raw_size == size


def test_choosing_sink_aborted_before_choosing_leaves_nothing(tmp_path):
    sink = open_stored_as(lambda c: tmp_path / stored_name("f.rdb", c), "auto")
    sink.write(b"x" * 100)
    sink.abort()
    assert list(tmp_path.iterdir()) == []


def test_a_fixed_choice_is_opened_at_once_under_its_name(tmp_path):
    sink = open_stored_as(lambda c: tmp_path / stored_name("f.rdb", c), "zstd")
    assert sink.target == tmp_path / "f.rdb.zst" and sink.target.exists()
    sink.write(os.urandom(100))
    assert sink.close().compression == "zstd"
