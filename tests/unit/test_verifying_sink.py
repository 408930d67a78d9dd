"""One sha256 per byte for a dump stored as it is (issue 14): its raw sha256 is its stored sha256, taken once by the
storage; compressed files keep both. Either way the manifest's two hashes are right, and `verify` (which hashes the
stored bytes and the raw stream on its own) still catches a changed byte."""

from __future__ import annotations

import hashlib
import os

import pytest

from clusterbak.engine import sinks
from clusterbak.engine.sinks import VerifyingRdbSink
from clusterbak.storage.sink import iter_stored_file, stored_name
from tests.unit.test_rdb_verify import build, rdb_len, rdb_str


def dump(value_bytes: int, compressible: bool = False) -> bytes:
    value = (b"abcd" * (value_bytes // 4)) if compressible else os.urandom(value_bytes)
    body = (b"\xfa" + rdb_str(b"redis-ver") + rdb_str(b"7.4.0") + b"\xfe" + rdb_len(0) + b"\xfb" + rdb_len(1)
            + rdb_len(0) + b"\x00" + rdb_str(b"k") + rdb_str(value))
    return build(body)


def store(tmp_path, data: bytes, compress: str, chunk: int = 256 << 10) -> VerifyingRdbSink:
    sink = VerifyingRdbSink(lambda c: tmp_path / stored_name("shard.rdb", c), compress, "n:dump.rdb")
    for i in range(0, len(data), chunk):
        sink.write(data[i:i + chunk])
    sink.close()
    return sink


@pytest.mark.parametrize("compress, size", [("none", 3 << 20), ("auto", 3 << 20), ("auto", 100_000)])
def test_a_raw_dump_records_one_hash_as_both_and_it_is_the_bytes_hash(tmp_path, compress, size, monkeypatch):
    data = dump(size)
    seen: list[list[int]] = []  # per sha256 object made, in order: the sink makes its own first
    real = hashlib.sha256

    def counting(*args):
        h, mine = real(*args), []
        seen.append(mine)

        class Counted:
            def update(self, b):
                mine.append(len(b))
                h.update(b)

            def hexdigest(self):
                return h.hexdigest()

        return Counted()

    monkeypatch.setattr(sinks.hashlib, "sha256", counting)
    sink = store(tmp_path, data, compress)
    assert sink.stored.compression == "none"
    assert sink.report.sha256 == sink.stored.sha256_stored == real(data).hexdigest()
    assert sink.report.total_keys == 1
    if size > 2 << 20:  # beyond auto's 1 MiB sample the sink no longer hashes: the storage's hash is the one
        assert sum(seen[0]) <= 2 << 20 < len(data)
    assert (tmp_path / "shard.rdb").read_bytes() == data


def test_a_compressed_dump_keeps_its_raw_hash_apart_from_the_stored_one(tmp_path):
    data = dump(3 << 20, compressible=True)
    sink = store(tmp_path, data, "auto")
    assert sink.stored.compression == "zstd"
    assert sink.report.sha256 == hashlib.sha256(data).hexdigest() != sink.stored.sha256_stored
    assert b"".join(iter_stored_file(tmp_path / "shard.rdb.zst", "zstd")) == data
