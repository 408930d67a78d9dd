"""The one typed, validated reading of a backup set's manifest.json. Pure.

A backup set is untrusted input: anyone who can write the store can change it. Every command that reads a set goes
through `parse_manifest`, which rejects (ManifestError, exit 4) anything that could steer a path or a command:
stored-file names that are not relative names inside the set, AOF names outside a strict pattern, node ids that are
not 40 hex characters, addresses that are not host:port, unknown formats. What it returns is frozen; `raw` keeps
the validated document for `show`/`--json`.

The paths and settings a manifest records about the nodes it came from (`config`, `source_path`) are information
for the operator only: where files go on a node comes from the inventory or the live node, never from here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, TypeVar

from clusterbak.errors import VerifyError
from clusterbak.model.aofmanifest import AofManifestError, needed, parse_aof_manifest
from clusterbak.model.names import NameError_, check_address, check_bare_name, check_node_id, check_relative_path
from clusterbak.model.nodeconfig import ModuleLoaded  # one MODULE LIST line: read from a node or from a set
from clusterbak.model.state import NodeState, states_by_id
from clusterbak.model.topology import Topology

T = TypeVar("T")

FORMAT = 1
KINDS = ("rdb", "aof")
COMPRESSIONS = ("zstd", "none")
ROLES = ("master", "replica")
BACKUP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,79}")
SHA256 = re.compile(r"[0-9a-f]{64}")
CRC64 = re.compile(r"[0-9a-f]{16}")
SLOTS = re.compile(r"\d{1,5}(-\d{1,5})?")
MODULE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
ACL_SOURCES = ("aclfile", "acl-list")  # the node's ACL file, or its in-memory users (ACL LIST) written as one
ENCRYPTIONS = ("none", "age")
AGE_RECIPIENT = re.compile(r"age1[02-9ac-hj-np-z]{58}")
TIMING_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")


class ManifestError(VerifyError):
    """The manifest is damaged or crafted; the message names the set and the field."""


@dataclass(frozen=True, slots=True)
class StoredFile:
    """One file stored in the set. `path` is relative to the set directory (checked)."""

    path: str
    sha256: str  # of the stored bytes
    stored_size: int
    compression: str = "none"
    raw_sha256: str | None = None  # of the decompressed bytes
    raw_size: int | None = None
    crc64: str | None = None  # RDB trailer, when the file is an RDB
    name: str | None = None  # AOF files: the name on the node (checked bare name)
    type: str | None = None  # AOF files: b | i | h | single
    seq: int = 0
    encryption: str = "none"  # none | age (the stored bytes are an age file)
    recipients: tuple[str, ...] = ()  # age recipients (public keys) it was encrypted to


@dataclass(frozen=True, slots=True)
class AofRecord:
    filename: str  # appendfilename on the source
    dirname: str | None
    manifest_name: str | None  # None: a pre-7.0 single appendonly.aof
    manifest_text: str | None
    folder: str
    files: tuple[StoredFile, ...]


@dataclass(frozen=True, slots=True)
class ShardRecord:
    index: int
    slots: tuple[str, ...]
    master_id: str
    master_address: str
    source_id: str
    source_address: str
    requested_at: float
    keys: int
    expires: int
    rdb_version: int | None
    file: StoredFile | None  # an RDB set
    aof: AofRecord | None  # an AOF set
    timings: Mapping[str, float] | None = None  # seconds per phase (wait_host_s, bgsave_s, ...); None: older set
    cow_bytes: int | None = None  # the source's rdb_last_cow_size after the save; None: older set or not reported

    @property
    def files(self) -> tuple[StoredFile, ...]:
        if self.aof is not None:
            return self.aof.files
        return (self.file,) if self.file is not None else ()


@dataclass(frozen=True, slots=True)
class TopologyNode:
    id: str
    address: str
    role: str
    master_id: str | None
    slots: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NodeConf:
    id: str
    address: str
    role: str
    file: StoredFile  # nodes.conf
    config: StoredFile | None = None  # the node's config file (holds secrets: stored 0600, never printed)
    acl: StoredFile | None = None  # its users, in ACL-file format (password hashes: never printed)
    acl_source: str | None = None  # "aclfile" | "acl-list"
    modules: tuple[ModuleLoaded, ...] | None = None  # None: not recorded (an older set, or MODULE LIST refused)

    @property
    def secret_files(self) -> tuple[StoredFile, ...]:
        return tuple(f for f in (self.config, self.acl) if f is not None)


@dataclass(frozen=True, slots=True)
class Manifest:
    backup_id: str
    kind: str
    seed: str
    created_at_unix: float
    nodes: tuple[TopologyNode, ...]  # the topology at backup time
    shards: tuple[ShardRecord, ...]
    node_confs: tuple[NodeConf, ...]
    raw_bytes: int
    stored_bytes: int
    keys: int
    redis_versions: tuple[str, ...]
    raw: Mapping[str, Any]  # the validated document, for show and --json; paths in it are information only

    def shard_of(self) -> dict[str, int]:
        """node id -> index of its shard (-1: a node of no shard, e.g. a master without slots)."""
        by_master = {s.master_id: s.index for s in self.shards}
        return {n.id: by_master.get(n.id if n.role == "master" else (n.master_id or ""), -1) for n in self.nodes}

    def shard(self, index: int) -> ShardRecord:
        return next(s for s in self.shards if s.index == index)

    def conf_of(self, node_id: str) -> NodeConf | None:
        return next((c for c in self.node_confs if c.id == node_id), None)

    def stored_files(self) -> tuple[StoredFile, ...]:
        return (tuple(f for s in self.shards for f in s.files) + tuple(c.file for c in self.node_confs)
                + tuple(f for c in self.node_confs for f in c.secret_files))

    def modules(self) -> dict[str, ModuleLoaded]:
        """Every module some node of the set loaded, by name (the highest version seen): what the data may need."""
        out: dict[str, ModuleLoaded] = {}
        for conf in self.node_confs:
            for m in conf.modules or ():
                if m.name not in out or m.version > out[m.name].version:
                    out[m.name] = m
        return out


def parse_manifest(doc: object, where: str, expect_id: str | None = None) -> Manifest:
    """Validate a loaded manifest.json. `where` names the set in messages (its directory)."""
    try:
        return _parse(doc, expect_id)
    except ManifestError as exc:
        raise ManifestError(f"{where}/manifest.json: {exc}") from None
    except (NameError_, AofManifestError) as exc:
        raise ManifestError(f"{where}/manifest.json: {exc}") from None


def _parse(doc: object, expect_id: str | None) -> Manifest:
    d = _map(doc, "the document")
    fmt = d.get("format")
    if fmt != FORMAT:
        raise ManifestError(f"format {fmt!r} is not {FORMAT}; this set was written by another clusterbak version")
    backup_id = _str(d, "backup_id")
    if not BACKUP_ID.fullmatch(backup_id):
        raise ManifestError(f"backup_id {backup_id!r} has characters a backup id cannot have")
    if expect_id is not None and backup_id != expect_id:
        raise ManifestError(f"backup_id {backup_id!r} is not the set's directory name {expect_id!r}")
    kind = d.get("kind", "rdb")
    if kind not in KINDS:
        raise ManifestError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    seed = _str(d, "seed")
    _checked("seed", check_address, seed)
    topo = _map(d.get("topology"), "topology")
    nodes = tuple(_topology_node(n, i) for i, n in enumerate(_list(topo.get("nodes"), "topology.nodes")))
    ids = {n.id for n in nodes}
    if len(ids) != len(nodes):
        raise ManifestError("topology.nodes lists a node id twice")
    shards = tuple(_shard(s, i, kind) for i, s in enumerate(_list(d.get("shards"), "shards")))
    if [s.index for s in shards] != list(range(len(shards))):
        raise ManifestError("shards[].index must be 0, 1, 2, ... in order")
    confs = tuple(_node_conf(n, i) for i, n in enumerate(_list(d.get("nodes"), "nodes")))
    for s in shards:
        if s.master_id not in ids:
            raise ManifestError(f"shards[{s.index}].master.id {s.master_id} is not a node of the topology")
    for c in confs:
        if c.id not in ids:
            raise ManifestError(f"nodes[].id {c.id} is not a node of the topology")
    paths = ([f.path for s in shards for f in s.files] + [c.file.path for c in confs]
             + [f.path for c in confs for f in c.secret_files])
    if len(set(paths)) != len(paths):
        raise ManifestError("two stored files share one path")
    _timings(d.get("timings"), "timings")  # informational, but a number where one is expected
    totals = _map(d.get("totals", {}), "totals")
    versions = d.get("redis_versions", [])
    return Manifest(
        backup_id=backup_id,
        kind=kind,
        seed=seed,
        created_at_unix=_num(d, "created_at_unix"),
        nodes=nodes,
        shards=shards,
        node_confs=confs,
        raw_bytes=_int(totals, "raw_bytes", 0),
        stored_bytes=_int(totals, "stored_bytes", 0),
        keys=_int(totals, "keys", 0),
        redis_versions=tuple(str(v) for v in versions) if isinstance(versions, list) else (),
        raw=d,
    )


def _identity(n: Mapping[str, Any], where: str) -> tuple[str, str, str]:
    """(id, address, role) of a node entry, each checked."""
    node_id = _checked(f"{where}.id", check_node_id, n.get("id"))
    address = _str(n, "address")
    _checked(f"{where}.address", check_address, address)
    role = n.get("role")
    if role not in ROLES:
        raise ManifestError(f"{where}.role {role!r} is not master or replica")
    return node_id, address, role


def _topology_node(raw: object, i: int) -> TopologyNode:
    n = _map(raw, f"topology.nodes[{i}]")
    node_id, address, role = _identity(n, f"topology.nodes[{i}]")
    master_id = n.get("master_id")
    if role == "replica":
        _checked(f"topology.nodes[{i}].master_id", check_node_id, master_id)
    return TopologyNode(node_id, address, role, master_id if role == "replica" else None,
                        tuple(_slots(n.get("slots", []), f"topology.nodes[{i}].slots")))


def _shard(raw: object, i: int, kind: str) -> ShardRecord:
    s = _map(raw, f"shards[{i}]")
    master = _map(s.get("master"), f"shards[{i}].master")
    source = _map(s.get("source"), f"shards[{i}].source")
    for name, side in (("master", master), ("source", source)):
        _checked(f"shards[{i}].{name}.id", check_node_id, side.get("id"))
        _checked(f"shards[{i}].{name}.address", check_address, side.get("address"))
    rdb = _map(s.get("rdb", {}), f"shards[{i}].rdb")
    save = _map(s.get("save", {}), f"shards[{i}].save")
    file = aof = None
    if kind == "aof":
        aof = _aof(s.get("aof"), f"shards[{i}].aof")
    else:
        file = _stored(s.get("file"), f"shards[{i}].file", rdb=True)
    version = rdb.get("version")
    return ShardRecord(
        index=_int(s, "index"), slots=tuple(_slots(s.get("slots", []), f"shards[{i}].slots")),
        master_id=master["id"], master_address=master["address"], source_id=source["id"],
        source_address=source["address"], requested_at=float(_num(save, "requested_at", 0.0)),
        keys=_int(rdb, "keys", 0), expires=_int(rdb, "expires", 0),
        rdb_version=version if isinstance(version, int) else None, file=file, aof=aof,
        timings=_timings(s.get("timings"), f"shards[{i}].timings"),
        cow_bytes=_optional_count(save, "rdb_last_cow_size", f"shards[{i}].save"))


def _timings(raw: object, where: str) -> Mapping[str, float] | None:
    """Seconds per phase: optional (sets written before phases were timed have none); names may grow."""
    if raw is None:
        return None
    out = {}
    for key, value in _map(raw, where).items():
        if not isinstance(key, str) or not TIMING_NAME.fullmatch(key):
            raise ManifestError(f"{where}: {key!r} is not a phase name")
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ManifestError(f"{where}.{key} {value!r} is not a number of seconds")
        out[key] = float(value)
    return MappingProxyType(out)


def _optional_count(d: Mapping[str, Any], key: str, where: str) -> int | None:
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ManifestError(f"{where}.{key} {value!r} is not a byte count")
    return value


def _aof(raw: object, where: str) -> AofRecord:
    a = _map(raw, where)
    filename = _checked(f"{where}.filename", check_bare_name, a.get("filename"))
    dirname = a.get("dirname")
    if dirname is not None:
        _checked(f"{where}.dirname", check_bare_name, dirname)
    folder = _checked(f"{where}.folder", check_relative_path, a.get("folder"))
    files = tuple(_stored(f, f"{where}.files[{j}]", rdb=False, aof=True)
                  for j, f in enumerate(_list(a.get("files"), f"{where}.files")))
    for f in files:
        if not f.path.startswith(folder + "/"):
            raise ManifestError(f"{where}: file {f.path!r} is not inside the shard's folder {folder!r}")
    manifest_name, text = a.get("manifest_name"), a.get("manifest_text")
    if manifest_name is None:
        if text is not None or len(files) != 1:
            raise ManifestError(f"{where}: a single-file AOF has exactly one file and no manifest")
    else:
        _checked(f"{where}.manifest_name", check_bare_name, manifest_name)
        if not isinstance(text, str) or len(text) > 1_000_000:
            raise ManifestError(f"{where}.manifest_text is missing or too long")
        named = [f.name for f in needed(parse_aof_manifest(text))]
        for name in named:
            _checked(f"{where}.manifest_text", check_bare_name, name)
        if named != [f.name for f in files]:
            raise ManifestError(f"{where}: the AOF manifest names {named}, the set lists {[f.name for f in files]}")
    return AofRecord(filename, dirname, manifest_name, text, folder, files)


def _stored(raw: object, where: str, rdb: bool, aof: bool = False) -> StoredFile:
    f = _map(raw, where)
    path = _checked(f"{where}.path", check_relative_path, f.get("path"))
    sha = _hex(f, "sha256", SHA256, where)
    compression = f.get("compression", "none")
    if compression not in COMPRESSIONS:
        raise ManifestError(f"{where}.compression {compression!r} is not one of {', '.join(COMPRESSIONS)}")
    raw_sha = _hex(f, "raw_sha256", SHA256, where) if (rdb or aof or "raw_sha256" in f) else None
    scheme, recipients = _encryption(f.get("encryption"), where)
    crc = f.get("crc64")
    if crc is not None and (not isinstance(crc, str) or not CRC64.fullmatch(crc)):
        raise ManifestError(f"{where}.crc64 {crc!r} is not 16 hex digits")
    name = kind = None
    seq = 0
    if aof:
        name = _checked(f"{where}.name", check_bare_name, f.get("name"))
        kind = f.get("type")
        if kind not in ("b", "i", "h", "single"):
            raise ManifestError(f"{where}.type {kind!r} is not b, i, h or single")
        seq = _int(f, "seq", 0)
    size = f.get("stored_size", f.get("size"))
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestError(f"{where}: stored size {size!r} is not a byte count")
    raw_size = f.get("raw_size")
    return StoredFile(path, sha, size, compression, raw_sha, raw_size if isinstance(raw_size, int) else None,
                      crc, name, kind, seq, scheme, recipients)


def _encryption(raw: object, where: str) -> tuple[str, tuple[str, ...]]:
    if raw is None:
        return "none", ()
    e = _map(raw, f"{where}.encryption")
    scheme = e.get("scheme")
    if scheme not in ENCRYPTIONS:
        raise ManifestError(f"{where}.encryption.scheme {scheme!r} is not one of {', '.join(ENCRYPTIONS)}")
    recipients = _list(e.get("recipients", []), f"{where}.encryption.recipients")
    for r in recipients:
        if not isinstance(r, str) or not AGE_RECIPIENT.fullmatch(r):
            raise ManifestError(f"{where}.encryption.recipients: {r!r} is not an age recipient")
    if scheme == "age" and not recipients:
        raise ManifestError(f"{where}.encryption lists no recipient")
    return scheme, tuple(recipients)


def _node_conf(raw: object, i: int) -> NodeConf:
    n = _map(raw, f"nodes[{i}]")
    node_id, address, role = _identity(n, f"nodes[{i}]")
    where = f"nodes[{i}]"
    config = acl = source = modules = None
    if n.get("config_file") is not None:
        config = _stored(n["config_file"], f"{where}.config_file", rdb=False)
    if n.get("acl") is not None:
        acl = _stored(n["acl"], f"{where}.acl", rdb=False)
        source = n["acl"].get("source")
        if source not in ACL_SOURCES:
            raise ManifestError(f"{where}.acl.source {source!r} is not one of {', '.join(ACL_SOURCES)}")
    if n.get("modules") is not None:
        modules = tuple(
            _module(m, f"{where}.modules[{j}]") for j, m in enumerate(_list(n["modules"], f"{where}.modules"))
        )
    for f in (config, acl):
        if f is not None and f.compression != "none":
            raise ManifestError(f"{where}: config and ACL files are stored uncompressed, {f.path} says {f.compression}")
    return NodeConf(node_id, address, role, _stored(n.get("nodes_conf"), f"{where}.nodes_conf", rdb=False),
                    config, acl, source, modules)


def _module(raw: object, where: str) -> ModuleLoaded:
    m = _map(raw, where)
    name = m.get("name")
    if not isinstance(name, str) or not MODULE_NAME.fullmatch(name):
        raise ManifestError(f"{where}.name {name!r} is not a module name")
    path = m.get("path")
    return ModuleLoaded(name, _int(m, "ver"), path if isinstance(path, str) else None)


def _checked(where: str, check: Callable[[object], T], value: object) -> T:
    """Run a names.py check, naming the manifest field in the message."""
    try:
        return check(value)
    except NameError_ as exc:
        raise ManifestError(f"{where}: {exc}") from None


def _slots(raw: object, where: str) -> list[str]:
    out = []
    for item in _list(raw, where):
        if not isinstance(item, str) or not SLOTS.fullmatch(item):
            raise ManifestError(f"{where}: {item!r} is not a slot or slot range")
        out.append(item)
    return out


def _map(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ManifestError(f"{where} is missing or not an object")
    return value


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ManifestError(f"{where} is missing or not a list")
    return value


def _str(d: Mapping[str, Any], key: str) -> str:
    value = d.get(key)
    if not isinstance(value, str) or not value:
        raise ManifestError(f"{key} is missing or not a string")
    return value


def _int(d: Mapping[str, Any], key: str, default: int | None = None) -> int:
    value = d.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ManifestError(f"{key} {value!r} is not a whole number")
    return value


def _num(d: Mapping[str, Any], key: str, default: float | None = None) -> float:
    value = d.get(key, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ManifestError(f"{key} {value!r} is not a number")
    return float(value)


def _hex(d: Mapping[str, Any], key: str, pattern: re.Pattern[str], where: str) -> str:
    value = d.get(key)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ManifestError(f"{where}.{key} {value!r} is not a hex digest")
    return value


# --- the writing side: what backup records, built here so it is what parse_manifest reads ---------------------------

CONFIG_KEYS = ("dir", "dbfilename", "cluster-config-file", "appendonly", "appenddirname", "save")


@dataclass(frozen=True, slots=True)
class ShardHeader:
    """What every shard record starts with, RDB or AOF: which slots, whose master, which node was copied and why."""

    index: int
    slots: tuple[str, ...]
    master_id: str
    master_address: str
    source_id: str
    source_address: str
    source_role: str | None
    why: str

    def record(self) -> dict[str, Any]:
        return {"index": self.index, "slots": list(self.slots),
                "master": {"id": self.master_id, "address": self.master_address},
                "source": {"id": self.source_id, "address": self.source_address, "role": self.source_role,
                           "why": self.why}}


@dataclass(frozen=True, slots=True)
class SaveTimes:
    """When the shard's snapshot (BGSAVE or BGREWRITEAOF) was asked for and done (unix seconds)."""

    requested_at: float
    finished_at: float
    duration_s: float

    def record(self) -> dict[str, Any]:
        return {"requested_at": self.requested_at, "finished_at": self.finished_at,
                "duration_s": round(self.duration_s, 3)}


@dataclass(frozen=True, slots=True)
class WrittenFile:
    """One file backup stored: where in the set, where it came from, its sizes and digests."""

    path: str  # relative to the set
    source_path: str  # on the node: information only
    raw_size: int
    stored_size: int
    sha256: str  # of the stored bytes
    raw_sha256: str  # of the decompressed bytes
    compression: str


def rdb_file_record(f: WrittenFile, crc64: str | None, checksum_disabled: bool) -> dict[str, Any]:
    return {"path": f.path, "source_path": f.source_path, "raw_size": f.raw_size, "stored_size": f.stored_size,
            "sha256": f.sha256, "raw_sha256": f.raw_sha256, "crc64": crc64, "checksum_disabled": checksum_disabled,
            "compression": f.compression}


def aof_file_record(f: WrittenFile, name: str, kind: str, seq: int, transfer_seconds: float, *,
                    crc64: str | None = None, rdb_version: int | None = None) -> dict[str, Any]:
    """An AOF base or incr file; an RDB-preamble base also records its CRC64 and RDB version."""
    out: dict[str, Any] = {"name": name, "type": kind, "seq": seq, "path": f.path, "source_path": f.source_path,
                           "raw_size": f.raw_size, "stored_size": f.stored_size, "sha256": f.sha256,
                           "compression": f.compression, "transfer_seconds": round(transfer_seconds, 3),
                           "raw_sha256": f.raw_sha256}
    if rdb_version is not None:
        out.update(crc64=crc64, rdb_version=rdb_version)
    return out


def rdb_shard_record(header: ShardHeader, *, master_replid: str | None, master_repl_offset: int,
                     source_replid: str | None, source_repl_offset: int | None, save: SaveTimes,
                     save_details: Mapping[str, Any], rdb: Mapping[str, Any], file: Mapping[str, Any],
                     transfer_seconds: float, timings: Mapping[str, float]) -> dict[str, Any]:
    """An RDB shard: the header, the replication offsets the snapshot holds, the save, the dump's contents, its file."""
    return {**header.record(), "master_replid": master_replid, "master_repl_offset": master_repl_offset,
            "source_repl_offset": source_repl_offset, "source_replid": source_replid,
            "save": {**save.record(), **save_details}, "rdb": dict(rdb), "file": dict(file),
            "transfer_seconds": round(transfer_seconds, 3), "timings": {k: round(v, 3) for k, v in timings.items()}}


def aof_shard_record(header: ShardHeader, *, rewrite: Mapping[str, Any], save: SaveTimes, keys: int, expires: int,
                     aof: Mapping[str, Any]) -> dict[str, Any]:
    """An AOF shard: the header, the rewrite, the key counts, and the AOF folder (aof_folder_record)."""
    return {**header.record(), "rewrite": dict(rewrite), "save": save.record(),
            "rdb": {"keys": keys, "expires": expires}, "aof": dict(aof)}


def aof_folder_record(dirname: str | None, filename: str, manifest_name: str | None, manifest_text: str | None,
                      folder: str, files: list[dict[str, Any]]) -> dict[str, Any]:
    return {"dirname": dirname, "filename": filename, "manifest_name": manifest_name, "manifest_text": manifest_text,
            "folder": folder, "files": files}


def node_record(node_id: str, address: str, role: str, path: str, source_path: str, size: int,
                sha256: str) -> dict[str, Any]:
    """A node's entry with its nodes.conf; backup adds its config file, users and modules (node_extras)."""
    return {"id": node_id, "address": address, "role": role,
            "nodes_conf": {"path": path, "source_path": source_path, "size": size, "sha256": sha256}}


def shard_files(shard: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The stored files of one shard record: its dump, or its AOF files."""
    return list(shard["aof"]["files"]) if "aof" in shard else [shard["file"]]


def manifest_record(*, kind: str, backup_id: str, created: float, started: float, version: str, seed: str,
                    source_mode: str, topology: Topology, states: tuple[NodeState, ...],
                    shards: list[dict[str, Any]], nodes: list[dict[str, Any]], timings: Mapping[str, float],
                    warnings: list[str], incomplete: list[str]) -> dict[str, Any]:
    """The whole manifest.json of a set, from the topology and states backup saw and the records it wrote."""
    by_id = states_by_id(states)
    starts = [s["save"]["requested_at"] for s in shards]
    ends = [s["save"]["finished_at"] for s in shards]
    return {
        "format": FORMAT, "kind": kind, "backup_id": backup_id,
        "created_at": datetime.fromtimestamp(created, UTC).isoformat(timespec="seconds"),
        "created_at_unix": created, "duration_s": round(created - started, 3),
        "clusterbak_version": version, "seed": seed, "source_mode": source_mode,
        "redis_versions": sorted({str(s.info.get("redis_version")) for s in states if s.reachable}),
        "skew_seconds": round(max(ends) - min(starts), 3) if shards else 0,
        "topology": {"nodes": [{
            "id": n.node_id, "address": n.address, "hostname": n.hostname or None, "role": n.role,
            "master_id": n.master_id, "flags": sorted(n.flags - {"myself"}), "config_epoch": n.config_epoch,
            "slots": [str(r) for r in n.slots]} for n in topology.nodes]},
        "config": {n.address: {k: by_id[n.node_id].config.get(k) for k in CONFIG_KEYS}
                   for n in topology.nodes if n.node_id in by_id and by_id[n.node_id].reachable},
        "shards": shards,
        "nodes": nodes,
        "totals": {"keys": sum(s["rdb"]["keys"] for s in shards),
                   "raw_bytes": sum(f["raw_size"] for s in shards for f in shard_files(s)),
                   "stored_bytes": sum(f["stored_size"] for s in shards for f in shard_files(s))},
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "warnings": list(warnings),
        "incomplete": list(incomplete),  # non-empty: `list` shows the set as incomplete, prune never keeps it
    }
