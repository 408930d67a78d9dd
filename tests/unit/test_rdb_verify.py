from __future__ import annotations

import hashlib
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from clusterbak.errors import VerifyError
from clusterbak.rdb.verify import DbCount, RdbReport, RdbVerifier, crc64_redis


def verify(data: bytes, name: str = "node-a/dump.rdb", chunk: int = 1 << 20) -> RdbReport:
    v = RdbVerifier(name)
    for i in range(0, len(data), chunk):
        v.feed(data[i : i + chunk])
    return v.finish()


def rdb_len(n: int) -> bytes:
    if n < 1 << 6:
        return bytes([n])
    if n < 1 << 14:
        return bytes([0x40 | n >> 8, n & 0xFF])
    if n < 1 << 32:
        return b"\x80" + n.to_bytes(4, "big")
    return b"\x81" + n.to_bytes(8, "big")


def rdb_str(s: bytes) -> bytes:
    return rdb_len(len(s)) + s


def build(body: bytes, magic: bytes = b"REDIS0012", checksum: bool = True) -> bytes:
    data = magic + body + b"\xff"
    return data + (crc64_redis(data) if checksum else 0).to_bytes(8, "little")


def test_crc64_check_value_and_incremental() -> None:
    assert crc64_redis(b"123456789") == 0xE9C6D914C4B8D9CA
    assert crc64_redis(b"6789", crc64_redis(b"12345")) == 0xE9C6D914C4B8D9CA
    assert crc64_redis(b"") == 0


def test_real_rdb_counts_and_digests(real_rdb: tuple[Path, int, int]) -> None:
    path, keys, expires = real_rdb
    data = path.read_bytes()
    report = verify(data, name=str(path), chunk=4096)
    assert report.magic == "REDIS" and report.rdb_version == 10  # redis-server 7.0
    assert report.dbs == (DbCount(db=0, keys=keys, expires=expires),)
    assert report.total_keys == keys and report.counts_known
    assert report.size == len(data)
    assert report.sha256 == hashlib.sha256(data).hexdigest()
    assert report.crc64_stored == report.crc64_computed == data[-8:][::-1].hex()
    assert not report.checksum_disabled
    aux = dict(report.aux)
    assert aux["redis-ver"].startswith("7.") and aux["redis-bits"] == "64" and int(aux["ctime"]) > 0
    assert not report.slot_info_seen


def test_any_chunking_gives_the_same_report(real_rdb: tuple[Path, int, int]) -> None:
    path, _, _ = real_rdb
    data = path.read_bytes()
    whole = verify(data)
    assert verify(data, chunk=1) == whole
    rng = random.Random(7)
    for _ in range(5):
        v = RdbVerifier("node-a/dump.rdb")
        i = 0
        while i < len(data):
            n = rng.choice([1, 2, 7, 8, 9, 10, 63, 1000])
            v.feed(memoryview(data)[i : i + n])
            i += n
        assert v.finish() == whole


def test_flipped_byte_is_a_crc_mismatch(real_rdb: tuple[Path, int, int]) -> None:
    data = bytearray(real_rdb[0].read_bytes())
    data[len(data) // 2] ^= 0x01
    with pytest.raises(VerifyError, match=r"node-a/dump\.rdb: CRC64 mismatch"):
        verify(bytes(data))


@pytest.mark.parametrize("cut", [1, 8, 9, 100, -20, -10, -5])
def test_truncated_file_fails(real_rdb: tuple[Path, int, int], cut: int) -> None:
    data = real_rdb[0].read_bytes()
    short = data[: len(data) - cut] if cut > 0 else data[:-cut]  # negative: keep only the first -cut bytes
    with pytest.raises(VerifyError, match=r"node-a/dump\.rdb: "):
        verify(short)


def test_bad_magic_fails(real_rdb: tuple[Path, int, int]) -> None:
    data = real_rdb[0].read_bytes()
    with pytest.raises(VerifyError, match=r"node-a/dump\.rdb: bad magic"):
        verify(b"RADIS" + data[5:])
    with pytest.raises(VerifyError, match="bad magic"):
        verify(b"\x00" * 100)


def test_unknown_version_fails() -> None:
    with pytest.raises(VerifyError, match=r"x\.rdb: unknown RDB version 99"):
        verify(build(b"", magic=b"REDIS0099"), name="x.rdb")
    with pytest.raises(VerifyError, match="unknown RDB version 12 for magic VALKEY"):
        verify(build(b"", magic=b"VALKEY012"), name="x.rdb")


def test_checksum_disabled_is_recorded_not_failed(rdb_files) -> None:
    report = verify(rdb_files.no_checksum.read_bytes(), chunk=1000)
    assert report.checksum_disabled
    assert report.crc64_stored == "0" * 16 and report.crc64_computed != "0" * 16
    assert report.dbs == (DbCount(0, rdb_files.expected_keys, rdb_files.expected_expires),)


def test_empty_dataset(rdb_files) -> None:
    data = rdb_files.empty.read_bytes()
    report = verify(data, chunk=1)
    assert report.dbs == () and report.total_keys == 0 and report.counts_known
    assert "redis-ver" in dict(report.aux)
    assert report.size == len(data)


def test_synthetic_header_all_encodings() -> None:
    lzf = b"\xc3" + rdb_len(6) + rdb_len(9) + b"\x02abc\x80\x02"  # LZF of b"abcabcabc": skipped, not decoded
    body = (
        b"\xfa" + rdb_str(b"redis-ver") + rdb_str(b"7.4.0")
        + b"\xfa" + rdb_str(b"ctime") + b"\xc2" + (1700000000).to_bytes(4, "little", signed=True)
        + b"\xfa" + rdb_str(b"used-mem") + b"\xc1" + (-2).to_bytes(2, "little", signed=True)
        + b"\xfa" + rdb_str(b"aof-base") + b"\xc0\x00"
        + b"\xfa" + rdb_str(b"lzf") + lzf
        + b"\xfa" + rdb_str(b"mid") + rdb_str(b"m" * 300)  # 14-bit length
        + b"\xfa" + rdb_str(b"big") + rdb_str(b"b" * 70000)  # 32-bit length, over MAX_AUX_VALUE: skipped
        + b"\xf5" + rdb_str(b"#!lua name=lib\n" * 2000)  # FUNCTION2, skipped
        + b"\xfe" + rdb_len(0)
        + b"\xfb" + rdb_len(70000) + b"\x81" + (5).to_bytes(8, "big")
        + b"\xf4" + rdb_len(16383) + rdb_len(12) + rdb_len(3)
        + b"\x00" + rdb_str(b"key") + rdb_str(b"value")  # the first key ends header parsing
    )
    data = build(body)
    report = verify(data, name="syn.rdb")
    assert verify(data, name="syn.rdb", chunk=1) == report
    assert report.rdb_version == 12
    assert report.dbs == (DbCount(0, 70000, 5),)
    assert report.slot_info_seen and report.counts_known
    assert report.aux == (
        ("redis-ver", "7.4.0"), ("ctime", "1700000000"), ("used-mem", "-2"), ("aof-base", "0"),
        ("lzf", "<9 bytes, lzf>"), ("mid", "m" * 300), ("big", "<70000 bytes>"),
    )


def test_valkey_slot_info_aux_and_module_aux() -> None:
    body = (
        b"\xfa" + rdb_str(b"valkey-ver") + rdb_str(b"9.0.0")
        + b"\xfe" + rdb_len(0) + b"\xfb" + rdb_len(2) + rdb_len(1)
        + b"\xfa" + rdb_str(b"slot-info") + rdb_str(b"42,2,1")
        + b"\xfc" + (1).to_bytes(8, "little") + b"\x00" + rdb_str(b"k") + rdb_str(b"v")
    )
    report = verify(build(body, magic=b"VALKEY080"), chunk=3)
    assert report.magic == "VALKEY" and report.rdb_version == 80
    assert report.dbs == (DbCount(0, 2, 1),) and report.slot_info_seen
    assert dict(report.aux)["slot-info"] == "42,2,1"

    module_first = build(b"\xf7" + rdb_len(12345) + b"junk that is not parsed")
    report = verify(module_first)
    assert not report.counts_known and report.dbs == ()


def test_garbage_header_with_valid_crc_fails() -> None:
    with pytest.raises(VerifyError, match=r"g\.rdb: malformed RDB header"):
        verify(build(b"\xfa\xc9"), name="g.rdb")  # an AUX key with an unknown string encoding
    with pytest.raises(VerifyError, match="runs past the end"):
        verify(build(b"\xfa" + rdb_len(5000) + b"short"), name="g.rdb")


def test_feed_after_finish_is_a_bug() -> None:
    v = RdbVerifier("x")
    v.feed(build(b""))
    v.finish()
    with pytest.raises(RuntimeError):
        v.feed(b"x")


def test_redis_check_rdb_agrees(real_rdb: tuple[Path, int, int], tmp_path: Path) -> None:
    """An independent reader (redis-check-rdb) accepts what we accept and rejects the flipped byte too."""
    tool = shutil.which("redis-check-rdb")
    if tool is None:
        pytest.skip("redis-check-rdb not found: install redis-server (e.g. apt-get install redis-server)")
    path = real_rdb[0]
    verify(path.read_bytes())
    assert subprocess.run([tool, str(path)], capture_output=True).returncode == 0
    bad = bytearray(path.read_bytes())
    bad[len(bad) // 2] ^= 0x01
    (tmp_path / "bad.rdb").write_bytes(bad)
    assert subprocess.run([tool, str(tmp_path / "bad.rdb")], capture_output=True).returncode != 0
