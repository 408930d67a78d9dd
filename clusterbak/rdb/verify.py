"""Streaming RDB verification, fed chunk by chunk; the file is never held in memory.

Checks magic and version, that the file ends with opcode 0xFF plus an 8-byte little-endian CRC64 over every byte
from the magic through the 0xFF, and hashes all bytes with sha256. On the way it reads the header opcodes up to the
first key (AUX fields, SELECTDB/RESIZEDB counts, SLOT_INFO): a cluster node only has DB 0, so that is enough.
feed() never raises on bad data; finish() raises VerifyError naming the file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator
from dataclasses import dataclass, field

import anycrc

from clusterbak.errors import VerifyError

_CRC = anycrc.Model("CRC64-REDIS")  # Jones polynomial, reflected, init 0, no final xor

OP_SLOT_INFO = 244
OP_FUNCTION2 = 245
OP_MODULE_AUX = 247
OP_AUX = 250
OP_RESIZEDB = 251
OP_SELECTDB = 254
OP_EOF = 255

# RDB 5 is the first with a CRC64 trailer; 13 is Redis 8.6. Valkey 9.x writes VALKEY080 / VALKEY081.
REDIS_VERSIONS = range(5, 14)
VALKEY_VERSIONS = range(80, 82)
MAGIC_LEN = 9  # "REDIS" + 4 digits, or "VALKEY" + 3 digits
TRAILER_LEN = 9  # opcode 0xFF + 8-byte CRC64
MAX_AUX_VALUE = 4096  # longer AUX strings are skipped, not kept


def crc64_redis(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC64 as Redis computes it; pass the previous value as `crc` to continue over more bytes."""
    return _CRC.calc(data, crc) if len(data) else crc


@dataclass(frozen=True, slots=True)
class DbCount:
    db: int
    keys: int
    expires: int


@dataclass(frozen=True, slots=True)
class RdbReport:
    name: str
    size: int
    sha256: str
    magic: str
    rdb_version: int
    crc64_stored: str  # 16 hex digits; "0000000000000000" means saved with rdbchecksum no
    crc64_computed: str
    checksum_disabled: bool
    dbs: tuple[DbCount, ...]  # from RESIZEDB, up to the first key
    aux: tuple[tuple[str, str], ...]  # AUX fields of the header, in file order
    slot_info_seen: bool  # SLOT_INFO opcode (Redis 7.4+) or "slot-info" AUX (Valkey 8+) before the first key
    counts_known: bool  # False if MODULE_AUX came first: parsing stopped there and `dbs` is not authoritative

    @property
    def total_keys(self) -> int:
        return sum(d.keys for d in self.dbs)


class _Malformed(Exception):
    pass


@dataclass(slots=True)
class _Header:
    """What the header parser found so far (mutable while feeding)."""

    magic: str | None = None
    version: int | None = None
    problem: str | None = None
    done: bool = False
    counts_known: bool = True
    slot_info_seen: bool = False
    dbs: list[DbCount] = field(default_factory=list)
    aux: list[tuple[str, str]] = field(default_factory=list)


# Parsers are generators: they yield (True, n) to be sent the next n bytes, or (False, n) to have n bytes
# skipped (sent b""), so chunk boundaries can fall anywhere and long strings are never buffered.
_Request = tuple[bool, int]


def _length(encoded_ok: bool = False) -> Generator[_Request, bytes, tuple[bool, int]]:
    """An RDB length as (encoded, value); `encoded` marks the 0b11 special string encodings."""
    b = (yield (True, 1))[0]
    if b < 0x40:
        return False, b
    if b < 0x80:
        return False, ((b & 0x3F) << 8) | (yield (True, 1))[0]
    if b in (0x80, 0x81):  # 32 or 64-bit big-endian
        return False, int.from_bytes((yield (True, 4 if b == 0x80 else 8)), "big")
    if b >= 0xC0 and encoded_ok:
        return True, b & 0x3F
    raise _Malformed(f"bad length byte 0x{b:02x}")


def _uint() -> Generator[_Request, bytes, int]:
    return (yield from _length())[1]


def _string(keep: bool) -> Generator[_Request, bytes, str]:
    """An RDB string as text; skipped when not kept, longer than MAX_AUX_VALUE, or LZF-compressed."""
    encoded, n = yield from _length(encoded_ok=True)
    if not encoded:
        if keep and n <= MAX_AUX_VALUE:
            return (yield (True, n)).decode("utf-8", "backslashreplace")
        yield (False, n)
        return f"<{n} bytes>"
    if n <= 2:  # 8, 16 or 32-bit little-endian signed integer
        return str(int.from_bytes((yield (True, 1 << n)), "little", signed=True))
    if n == 3:  # LZF: compressed length, uncompressed length, data
        clen = yield from _uint()
        ulen = yield from _uint()
        yield (False, clen)
        return f"<{ulen} bytes, lzf>"
    raise _Malformed(f"unknown string encoding {n}")


def _parse(h: _Header) -> Generator[_Request, bytes, None]:
    head = yield (True, MAGIC_LEN)
    if head[:5] == b"REDIS" and head[5:].isdigit():
        h.magic, h.version = "REDIS", int(head[5:])
    elif head[:6] == b"VALKEY" and head[6:].isdigit():
        h.magic, h.version = "VALKEY", int(head[6:])
    else:
        raise _Malformed(f"bad magic {head!r}, not an RDB file")
    if h.version not in (REDIS_VERSIONS if h.magic == "REDIS" else VALKEY_VERSIONS):
        return  # finish() reports it
    db = 0
    while True:
        op = (yield (True, 1))[0]
        if op == OP_AUX:
            key = yield from _string(keep=True)
            h.aux.append((key, (yield from _string(keep=True))))
            h.slot_info_seen |= key == "slot-info"  # Valkey 8+: "slot,keys,expires" before a slot's keys
        elif op == OP_FUNCTION2:
            yield from _string(keep=False)
        elif op == OP_SELECTDB:
            db = yield from _uint()
        elif op == OP_RESIZEDB:
            keys = yield from _uint()
            h.dbs.append(DbCount(db, keys, (yield from _uint())))
        elif op == OP_SLOT_INFO:  # Redis 7.4+: slot id, slot size, expires slot size
            for _ in range(3):
                yield from _uint()
            h.slot_info_seen = True
        else:  # EOF, MODULE_AUX (not skipped), or the first key: a value type or an opcode before one
            h.counts_known = op != OP_MODULE_AUX
            break
    h.done = True


class RdbVerifier:
    """Feed every byte of one RDB file in order, then finish() for the report. `hash_bytes=False`: no sha256 (the
    report's is ""), for a caller that has the same bytes' sha256 from elsewhere (a file stored as it is)."""

    def __init__(self, name: str, hash_bytes: bool = True) -> None:
        self.name = name
        self._size = 0
        self._sha = hashlib.sha256() if hash_bytes else None
        self._crc = 0
        self._tail = b""  # the last (up to) 8 bytes, not yet in the CRC: the stored CRC at the end
        self._before_tail: int | None = None  # the last byte that is in the CRC: 0xFF at the end
        self._header = _Header()
        self._parser: Generator[_Request, bytes, None] | None = _parse(self._header)
        self._request = next(self._parser)
        self._pending = bytearray()  # bytes fed but not yet consumed by the header parser
        self._finished = False

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        if self._finished:
            raise RuntimeError(f"{self.name}: feed() after finish()")
        n = len(chunk)
        if not n:
            return
        self._size += n
        if self._sha is not None:
            self._sha.update(chunk)
        if self._parser is not None:
            self._drive(chunk)
        if n >= 8:  # CRC everything but the last 8 bytes seen so far
            if self._tail:
                self._crc = _CRC.calc(self._tail, self._crc)
                self._before_tail = self._tail[-1]
            if n > 8:
                head = memoryview(chunk)[:-8]
                self._crc = _CRC.calc(head, self._crc)
                self._before_tail = head[-1]
            self._tail = bytes(chunk[-8:])
        else:
            joined = self._tail + bytes(chunk)
            if len(joined) > 8:
                self._crc = _CRC.calc(joined[:-8], self._crc)
                self._before_tail = joined[-9]
            self._tail = joined[-8:]

    def _drive(self, chunk: bytes | bytearray | memoryview) -> None:
        assert self._parser is not None
        buf = self._pending
        buf += chunk
        read, want = self._request
        try:
            while True:
                if read and len(buf) < want:
                    break
                take = min(want, len(buf))
                data = bytes(buf[:take]) if read else b""
                del buf[:take]
                if take < want:  # a skip that continues in the next chunk
                    want -= take
                    break
                read, want = self._parser.send(data)
            self._request = (read, want)
            return
        except StopIteration:
            pass
        except (_Malformed, IndexError) as exc:
            self._header.problem = str(exc)
        self._parser, self._pending = None, bytearray()

    def finish(self) -> RdbReport:
        self._finished = True
        h, name, size = self._header, self.name, self._size
        if size < MAGIC_LEN:
            raise VerifyError(f"{name}: {size} bytes is too short for an RDB file")
        if h.magic is None or h.version is None:
            raise VerifyError(f"{name}: {h.problem}")
        if h.version not in (REDIS_VERSIONS if h.magic == "REDIS" else VALKEY_VERSIONS):
            raise VerifyError(f"{name}: unknown RDB version {h.version} for magic {h.magic}")
        if size < MAGIC_LEN + TRAILER_LEN:
            raise VerifyError(f"{name}: {size} bytes is too short for an RDB file (magic, EOF and CRC64)")
        if self._before_tail != OP_EOF:
            raise VerifyError(f"{name}: does not end with the EOF opcode 0xFF and a CRC64 (truncated?)")
        stored = int.from_bytes(self._tail, "little")
        if stored and stored != self._crc:
            raise VerifyError(f"{name}: CRC64 mismatch: stored {stored:016x}, computed {self._crc:016x}")
        if h.problem or not h.done:
            raise VerifyError(f"{name}: malformed RDB header: {h.problem or 'a field runs past the end'}")
        return RdbReport(
            name=name,
            size=size,
            sha256=self._sha.hexdigest() if self._sha is not None else "",
            magic=h.magic,
            rdb_version=h.version,
            crc64_stored=f"{stored:016x}",
            crc64_computed=f"{self._crc:016x}",
            checksum_disabled=stored == 0,
            dbs=tuple(h.dbs),
            aux=tuple(h.aux),
            slot_info_seen=h.slot_info_seen,
            counts_known=h.counts_known,
        )
