"""Server versions and the RDB format versions they write and read. Pure.

A server loads RDB files up to the version it writes itself (older formats too) and refuses newer ones, so a
dump written by a newer server cannot be restored onto an older one. Valkey reads Redis' formats up to 11
(Redis 7.2) and not Redis 7.4+'s 12. Checked against the real files of the fleet images: Redis 6.0.16 writes
9, 7.0.15 writes 10, 8.0.2 writes 12; Valkey 8.0.1 and 8.1.1 write 11.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# (server, (major, minor)) from which on it writes this RDB version; a later release writes at least as much
RDB_WRITTEN: dict[str, tuple[tuple[tuple[int, int], int], ...]] = {
    "redis": (((2, 6), 6), ((3, 2), 7), ((4, 0), 8), ((5, 0), 9), ((7, 0), 10), ((7, 2), 11), ((7, 4), 12),
              ((8, 6), 13)),
    "valkey": (((7, 2), 11), ((9, 0), 80)),
}
VALKEY_READS_REDIS_UP_TO = 11  # Redis 7.4's format 12 is not Valkey's
_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?")


@dataclass(frozen=True, slots=True)
class ServerVersion:
    server: str  # "redis" | "valkey"
    version: tuple[int, int, int]

    @property
    def text(self) -> str:
        return f"{self.server} {'.'.join(map(str, self.version))}"

    @staticmethod
    def parse(server: str, version: str) -> ServerVersion | None:
        m = _VERSION.match(version or "")
        if not m or server not in RDB_WRITTEN:
            return None
        return ServerVersion(server, (int(m[1]), int(m[2]), int(m[3] or 0)))

    @staticmethod
    def from_info(info: Mapping[str, Any]) -> ServerVersion | None:
        """From INFO server: Valkey reports redis_version 7.2.4 for compatibility, its own in valkey_version."""
        if info.get("valkey_version") or info.get("server_name") == "valkey":
            return ServerVersion.parse("valkey", str(info.get("valkey_version") or ""))
        return ServerVersion.parse("redis", str(info.get("redis_version") or ""))

    @staticmethod
    def from_text(text: str) -> ServerVersion | None:
        """From `ServerVersion.text` ("redis 7.0.15")."""
        server, _, version = (text or "").partition(" ")
        return ServerVersion.parse(server, version)


def rdb_written(sv: ServerVersion) -> int:
    """The RDB version this server writes, which is also the newest it reads."""
    found = RDB_WRITTEN[sv.server][0][1]
    for since, rdb in RDB_WRITTEN[sv.server]:
        if sv.version[:2] >= since:
            found = rdb
    return found


def can_read(sv: ServerVersion, magic: str, rdb_version: int) -> bool:
    if magic == "VALKEY":  # Valkey 9's own format: only Valkey 9+ reads it
        return sv.server == "valkey" and rdb_written(sv) >= rdb_version
    if sv.server == "valkey":
        return rdb_version <= VALKEY_READS_REDIS_UP_TO
    return rdb_version <= rdb_written(sv)


def oldest_reader(magic: str, rdb_version: int) -> str:
    """The oldest release that reads this format, for the refusal's advice."""
    server = "valkey" if magic == "VALKEY" else "redis"
    for since, rdb in RDB_WRITTEN[server]:
        if rdb >= rdb_version:
            return f"{server} {since[0]}.{since[1]}"
    return f"a {server} release newer than clusterbak knows"


def written_by(manifest_raw: Mapping[str, Any], shard_index: int) -> str:
    """Who wrote a shard's dump, from the AUX fields the manifest recorded (redis-ver / valkey-ver); only a
    version-shaped value is used (the manifest is untrusted input)."""
    for shard in manifest_raw.get("shards") or ():
        if isinstance(shard, Mapping) and shard.get("index") == shard_index:
            rdb = shard.get("rdb")
            if not isinstance(rdb, Mapping):
                rdb = {}
            for server, key in (("valkey", "valkey_ver"), ("redis", "redis_ver")):
                value = rdb.get(key)
                if isinstance(value, str) and re.fullmatch(r"\d+\.\d+(\.\d+)?", value):
                    return f"{server} {value}"
    return "a newer server"


def restore_version_refusal(where: str, rdb_version: int | None, writer: str, target_server: str | None) -> str | None:
    """Why a shard's dump (RDB `rdb_version`, written by `writer`) cannot be loaded by the target's server, or
    None (also when either is unknown: a target that is down is not refused for its version)."""
    target = ServerVersion.from_text(target_server or "")
    if target is None or rdb_version is None:
        return None
    magic = "VALKEY" if rdb_version >= 80 else "REDIS"  # Valkey 9's own numbers start at 80
    if can_read(target, magic, rdb_version):
        return None
    reads = rdb_written(target) if target.server == "redis" else VALKEY_READS_REDIS_UP_TO
    return (f"{where}: runs {target.text}, which cannot load RDB version {rdb_version} written by {writer} "
            f"(it reads up to {reads}); restore onto {oldest_reader(magic, rdb_version)} or newer, or upgrade "
            "the target first")
