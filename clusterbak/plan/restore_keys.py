"""restore-keys, the pure part: which keys a selection means, which shards hold them, where each goes.

A key's slot is CRC16-XMODEM of its hash tag (the part between the first `{` and the next `}`, when not empty) or of
the whole name. A glob whose hash tag is literal pins every matching key to one slot, so only one shard is read.
Nothing here does I/O.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from clusterbak.errors import UsageError
from clusterbak.model.aofmanifest import needed, parse_aof_manifest
from clusterbak.model.manifest import Manifest, ShardRecord
from clusterbak.model.topology import SLOT_COUNT, SlotRange, TopologyParseError, compress_slots

GLOB_SPECIAL = b"*?[\\"
CONFLICT_POLICIES = ("skip", "replace", "fail")
TTL_POLICIES = ("keep", "drop")
# DUMP payload: <RDB object type byte> ... <2-byte LE RDB version> <8-byte CRC64>
PAYLOAD_TYPES = {0: "string", 1: "list", 2: "set", 3: "zset", 4: "hash", 5: "zset", 6: "module", 7: "module",
                 9: "hash", 10: "list", 11: "set", 12: "zset", 13: "hash", 14: "list", 15: "stream", 16: "hash",
                 17: "zset", 18: "list", 19: "stream", 20: "set", 21: "stream", 22: "hash", 23: "hash", 24: "hash",
                 25: "hash"}
TYPES = ("string", "hash", "list", "set", "zset", "stream", "module")


def key_slot(key: bytes) -> int:
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1:end]
    return binascii.crc_hqx(key, 0) & 0x3FFF


def pattern_slot(pattern: bytes) -> int | None:
    """The one slot every key matching this glob hashes to, or None when it may match keys of many slots.

    It is one slot when the text up to the first `{` and the tag up to the next `}` are literal (no glob
    characters, no backslash) and the tag is not empty: every matching key then has that same first tag."""
    start = pattern.find(b"{")
    if start < 0 or any(c in GLOB_SPECIAL for c in pattern[:start]):
        return None
    end = pattern.find(b"}", start + 1)
    if end <= start + 1:
        return None
    tag = pattern[start + 1:end]
    if any(c in GLOB_SPECIAL for c in tag):
        return None
    return binascii.crc_hqx(tag, 0) & 0x3FFF


def glob_match(pattern: bytes, name: bytes) -> bool:
    """Redis's stringmatchlen(): `*`, `?`, `[abc]`, `[^a-z]`, backslash escapes; case-sensitive."""
    return _match(pattern, 0, name, 0)


def _match(p: bytes, i: int, s: bytes, j: int) -> bool:
    while i < len(p):
        c = p[i]
        if c == 0x2A:  # *
            while i + 1 < len(p) and p[i + 1] == 0x2A:
                i += 1
            if i + 1 == len(p):
                return True
            return any(_match(p, i + 1, s, k) for k in range(j, len(s) + 1))
        if j >= len(s):
            return False
        if c == 0x3F:  # ?
            pass
        elif c == 0x5B:  # [
            i, ok = _class(p, i + 1, s[j])
            if not ok:
                return False
        else:
            if c == 0x5C and i + 1 < len(p):  # backslash
                i += 1
                c = p[i]
            if c != s[j]:
                return False
        i += 1
        j += 1
    return j == len(s)


def _class(p: bytes, i: int, ch: int) -> tuple[int, bool]:
    """Match one character against the class starting at p[i] (after `[`); return (index of `]`, matched)."""
    negate = i < len(p) and p[i] == 0x5E
    if negate:
        i += 1
    hit = False
    while i < len(p) and p[i] != 0x5D:
        if p[i] == 0x5C and i + 1 < len(p):
            i += 1
            hit |= p[i] == ch
        elif i + 2 < len(p) and p[i + 1] == 0x2D:
            lo, hi = sorted((p[i], p[i + 2]))
            hit |= lo <= ch <= hi
            i += 2
        else:
            hit |= p[i] == ch
        i += 1
    if i >= len(p):  # Redis treats an unterminated class as ending at the pattern's end
        i = len(p) - 1
    return i, hit != negate


def parse_slot_ranges(specs: list[str]) -> tuple[SlotRange, ...]:
    out = []
    for spec in specs:
        lo, sep, hi = spec.partition("-")
        try:
            start, end = int(lo), int(hi if sep else lo)
            out.append(SlotRange(start, end))
        except (ValueError, TopologyParseError):  # not numbers, or outside 0-16383
            raise UsageError(f"--slots {spec!r} is not A-B with 0 <= A <= B <= {SLOT_COUNT - 1}") from None
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Selection:
    """Keys named (--keys-from) or matching a glob (--match), within --slots, of --type. Nothing named: every key."""

    patterns: tuple[bytes, ...] = ()
    names: tuple[bytes, ...] = ()
    slots: tuple[SlotRange, ...] = ()
    types: frozenset[str] = frozenset()
    _slot_set: frozenset[int] | None = field(default=None, compare=False, repr=False)
    _name_set: frozenset[bytes] = field(default=frozenset(), compare=False, repr=False)

    @staticmethod
    def of(patterns: Iterable[bytes] = (), names: Iterable[bytes] = (), slots: Iterable[SlotRange] = (),
           types: Iterable[str] = ()) -> Selection:
        bad = sorted(set(types) - set(TYPES))
        if bad:
            raise UsageError(f"--type {bad[0]!r} is not one of {', '.join(TYPES)}")
        names = tuple(dict.fromkeys(n for n in names if n))
        slot_set = frozenset(s for r in slots for s in range(r.start, r.end + 1)) if slots else None
        return Selection(tuple(dict.fromkeys(patterns)), names, tuple(slots), frozenset(types), slot_set,
                         frozenset(names))

    @property
    def everything(self) -> bool:
        return not self.patterns and not self.names

    def candidate_slots(self) -> frozenset[int] | None:
        """The slots a selected key can live in; None when that is every slot."""
        by_name: set[int] | None = None
        if not self.everything and all(pattern_slot(p) is not None for p in self.patterns):
            by_name = {s for p in self.patterns if (s := pattern_slot(p)) is not None}
            by_name |= {key_slot(n) for n in self.names}
        if by_name is None:
            return self._slot_set
        return frozenset(by_name if self._slot_set is None else by_name & self._slot_set)

    def in_slots(self, key: bytes) -> bool:
        return self._slot_set is None or key_slot(key) in self._slot_set

    def selects(self, key: bytes) -> bool:
        """A key name in the selection (type aside)."""
        if not self.in_slots(key):
            return False
        if self.everything:
            return True
        return key in self._name_set or any(glob_match(p, key) for p in self.patterns)

    def wants_type(self, kind: str) -> bool:
        return not self.types or kind in self.types

    def scans(self) -> tuple[tuple[bytes | None, tuple[bytes, ...]], ...]:
        """The SCANs to run: (MATCH pattern or None for all, earlier patterns whose keys were already taken)."""
        if self.everything:
            return ((None, ()),)
        return tuple((p, self.patterns[:i]) for i, p in enumerate(self.patterns))

    def describe(self) -> str:
        parts = [f"--match {p.decode(errors='replace')}" for p in self.patterns]
        if self.names:
            parts.append(f"{len(self.names)} named keys")
        if self.slots:
            parts.append("--slots " + ",".join(str(r) for r in self.slots))
        if self.types:
            parts.append("--type " + ",".join(sorted(self.types)))
        return " ".join(parts) or "every key"


def payload_type(payload: bytes) -> str:
    return PAYLOAD_TYPES.get(payload[0], "unknown") if payload else "unknown"


def payload_rdb_version(payload: bytes) -> int:
    """The RDB version a DUMP payload was written with: 2 bytes little-endian before the 8-byte CRC64."""
    if len(payload) < 11:
        raise ValueError(f"DUMP payload of {len(payload)} bytes is too short to carry a version")
    return int.from_bytes(payload[-10:-8], "little")


@dataclass(frozen=True, slots=True)
class ServerVersion:
    """What a server says it is: `redis` or `valkey`, and its own version (valkey_version for Valkey)."""

    name: str
    version: str

    @staticmethod
    def from_info(info: Mapping[str, Any]) -> ServerVersion:
        if info.get("valkey_version") or str(info.get("server_name", "")).lower() == "valkey":
            return ServerVersion("valkey", str(info.get("valkey_version") or info.get("redis_version")))
        return ServerVersion("redis", str(info.get("redis_version", "?")))

    @property
    def parts(self) -> tuple[int, int]:
        try:
            major, minor = self.version.split(".")[:2]
            return int(major), int(minor)
        except ValueError:
            return (0, 0)

    def __str__(self) -> str:
        return f"{'Valkey' if self.name == 'valkey' else 'Redis'} {self.version}"


# (first version, highest RDB version it reads), newest first; checked against the servers' rdb.h
_REDIS_RDB = (((8, 6), 13), ((7, 4), 12), ((7, 2), 11), ((7, 0), 10), ((5, 0), 9), ((4, 0), 8), ((3, 2), 7),
              ((2, 6), 6))
_VALKEY_RDB = (((7, 2), 11),)


# the first Redis whose RDB loading can deep-check every compact encoding (`sanitize-dump-payload yes`, rdb.c
# rdbLoadObject's deep_integrity_validation); Redis 6.0 has no such check, every Valkey has it
SANITIZING_REDIS = (6, 2)


def scratch_refusal(scratch: ServerVersion) -> str | None:
    """Why the redis-server on this host may not read a backup set for restore-keys, or None: a set is untrusted, and
    what the scratch server loads without deep checks goes on byte for byte to a live target."""
    if scratch.name == "redis" and scratch.parts < SANITIZING_REDIS:
        return (f"the redis-server on this host ({scratch}) cannot deep-check a backup set's values as it loads them "
                "(sanitize-dump-payload came in Redis 6.2), so a crafted value would go on to the live target; "
                "install Redis 6.2 or newer on the control host (its DUMP payloads are RDB 9, which Redis 6.0 reads)")
    return None


def max_rdb_version(server: ServerVersion) -> int | None:
    """The newest RDB version (and so DUMP payload) this server accepts; None when unknown."""
    table = _VALKEY_RDB if server.name == "valkey" else _REDIS_RDB
    for first, rdb in table:
        if server.parts >= first:
            return rdb
    return None


def version_refusal(target: str, server: ServerVersion, payload_version: int, source: str) -> str | None:
    """Why `target` cannot take DUMP payloads of `payload_version`, or None."""
    top = max_rdb_version(server)
    if top is None:
        return f"{target} runs {server}, whose RDB support is unknown to clusterbak; refusing to write to it"
    if payload_version > top:
        return (f"{target} runs {server}, which reads RDB up to version {top}, but the keys are RDB version "
                f"{payload_version} ({source}); restore into a newer server, or run restore-keys on a host whose "
                f"redis-server is no newer than the target's")
    return None


@dataclass(frozen=True, slots=True)
class TargetMaster:
    address: str
    slots: tuple[SlotRange, ...]
    server: ServerVersion
    keys: int


def slot_owner_table(owners: list[tuple[str, tuple[SlotRange, ...]]]) -> list[int]:
    """slot -> index into owners (-1 when no master serves it)."""
    table = [-1] * SLOT_COUNT
    for i, (_, ranges) in enumerate(owners):
        for r in ranges:
            table[r.start:r.end + 1] = [i] * r.count
    return table


def uncovered_for(table: list[int], slots: frozenset[int] | None) -> tuple[SlotRange, ...]:
    wanted = range(SLOT_COUNT) if slots is None else sorted(slots)
    return compress_slots([s for s in wanted if table[s] < 0])


@dataclass(frozen=True, slots=True)
class ShardToRead:
    index: int
    slots: tuple[str, ...]
    source: str
    keys_in_backup: int | None


def shards_to_read(shards: tuple[ShardRecord, ...], slots: frozenset[int] | None) -> list[ShardToRead]:
    """The shards whose backed-up slot ranges hold a candidate slot (all of them when slots is None)."""
    out = []
    for shard in shards:
        ranges = [slot_range_of(text) for text in shard.slots]
        if slots is None or any(s in slots for r in ranges for s in range(r.start, r.end + 1)):
            out.append(ShardToRead(shard.index, tuple(shard.slots), shard.source_address, shard.keys))
    return out


def slot_range_of(text: str) -> SlotRange:
    lo, _, hi = str(text).partition("-")
    return SlotRange(int(lo), int(hi or lo))


@dataclass(frozen=True, slots=True)
class RestoreKeysPlan:
    backup_id: str
    kind: str
    selection: Selection
    shards: tuple[ShardToRead, ...]
    masters: tuple[TargetMaster, ...]
    standalone: bool
    on_conflict: str
    ttl: str
    rename_prefix: bytes
    scratch: ServerVersion
    payload_version: int | None
    refusals: tuple[str, ...] = ()
    place_bytes: int = 0  # the needed shards' dumps, placed under the scratch root all at once before any write

    @property
    def ok(self) -> bool:
        return not self.refusals

    def to_dict(self) -> dict[str, Any]:
        return {
            "backup_id": self.backup_id, "kind": self.kind, "selection": self.selection.describe(),
            "shards": [{"index": s.index, "slots": list(s.slots), "source": s.source,
                        "keys_in_backup": s.keys_in_backup} for s in self.shards],
            "target": {"standalone": self.standalone,
                       "masters": [{"address": m.address, "slots": [str(r) for r in m.slots],
                                    "server": str(m.server), "keys": m.keys} for m in self.masters]},
            "on_conflict": self.on_conflict, "ttl": self.ttl,
            "rename_prefix": self.rename_prefix.decode(errors="replace"),
            "scratch_server": str(self.scratch), "payload_rdb_version": self.payload_version,
            "place_bytes": self.place_bytes,
            "refusals": list(self.refusals),
        }


def plan_restore_keys(manifest: Manifest, selection: Selection, masters: list[TargetMaster], standalone: bool,
                      scratch: ServerVersion, on_conflict: str = "skip", ttl: str = "keep",
                      rename_prefix: bytes = b"") -> RestoreKeysPlan:
    refusals = []
    if on_conflict not in CONFLICT_POLICIES:
        raise UsageError(f"--on-conflict {on_conflict!r} is not one of {', '.join(CONFLICT_POLICIES)}")
    if ttl not in TTL_POLICIES:
        raise UsageError(f"--ttl {ttl!r} is not one of {', '.join(TTL_POLICIES)}")
    kind = manifest.kind
    slots = selection.candidate_slots()
    shards = shards_to_read(manifest.shards, slots)
    top = max_rdb_version(scratch)
    unsafe = scratch_refusal(scratch)
    if unsafe:
        refusals.append(unsafe)
    for shard in (s for s in manifest.shards if s.index in {x.index for x in shards}):
        version = shard.rdb_version
        if version is not None and (top is None or version > top):
            refusals.append(f"shard {shard.index} was saved as RDB version {version} (backup from "
                            f"{', '.join(manifest.redis_versions) or 'an unknown server'}), but the redis-server on "
                            f"this host ({scratch}) reads RDB up to {top}; install a newer one on the control host")
    source = f"DUMP of the {scratch} that reads the backup here"
    for m in masters:
        why = version_refusal(m.address, m.server, top or 0, source) if top is not None else None
        if why:
            refusals.append(why)
    if not masters:
        refusals.append("the target has no master serving slots")
    else:
        table = slot_owner_table([(m.address, m.slots) for m in masters])
        gaps = uncovered_for(table, None if rename_prefix else slots)
        if gaps:
            refusals.append("no target master serves slots " + " ".join(str(r) for r in gaps[:5])
                            + (" ..." if len(gaps) > 5 else "") + "; fix the target's slot coverage first")
    wanted = {x.index for x in shards}
    place = sum(shard_place_bytes(s) for s in manifest.shards if s.index in wanted)
    return RestoreKeysPlan(manifest.backup_id, kind, selection, tuple(shards), tuple(masters), standalone,
                           on_conflict, ttl, rename_prefix, scratch, top, tuple(refusals), place)


def shard_place_bytes(shard: ShardRecord) -> int:
    """The bytes restore-keys places for this shard: its dump, or the AOF files Redis loads (base and incr)."""
    if shard.aof is None:
        files = [shard.file] if shard.file is not None else []
    elif shard.aof.manifest_text is None:
        files = list(shard.aof.files)
    else:
        names = {f.name for f in needed(parse_aof_manifest(shard.aof.manifest_text))}
        files = [f for f in shard.aof.files if f.name in names]
    return sum(f.raw_size if f.raw_size is not None else f.stored_size for f in files)


SCRATCH_MOVE = "--scratch-dir DIR (default: the temp dir, $TMPDIR)"


def scratch_space_refusal(root: str, needed_bytes: int, free_bytes: int) -> str | None:
    """Why the needed shards cannot be placed under the scratch root, or None."""
    if needed_bytes <= free_bytes:
        return None
    return (f"the scratch root {root} has {free_bytes} bytes free, but the needed shards' dumps take {needed_bytes} "
            f"bytes there at once (placed and checked before any key is written); nothing was written. Give "
            f"{SCRATCH_MOVE} on a filesystem with room")
