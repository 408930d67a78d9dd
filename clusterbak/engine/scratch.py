"""A scratch redis-server on loopback holding one shard of a backup set, removed with its files when done.

A backup set is untrusted input, and the values a scratch server holds go on verbatim to a live target (DUMP and
MIGRATE copy a listpack, ziplist or intset as the bytes it is; the target's RESTORE deep-checks them only when it
runs with `sanitize-dump-payload yes`, which is not Redis's default). So a scratch server runs with
`sanitize-dump-payload yes`: while it loads the shard's RDB (or the RDB preamble of its AOF) it checks every entry
of every compact encoding, and it refuses to load a set with a crafted one instead of passing it on.
A shard it refuses that way is a damaged set (VerifyError, naming the shard's file and Redis's reason).

It loads the shard as a *replica of nothing*: its master address is a local socket we bind and never listen on, so
the link never comes up, nothing is ever synced over it, and a replica keeps the keys whose TTL has passed (a
master drops them while loading, without a trace). restore-keys promotes it briefly to learn those names from
keyspace events, then demotes it again, so the keyspace it copies from never changes.

Before any scratch server starts, restore-keys places every needed shard (`place_shard`): each stored file is read
once, decrypted, decompressed and checked as it streams (sha256 of the stored and of the original bytes, RDB
structure and CRC64: engine/verify.py's check) into a private directory, and the placed dump is then deep-checked by
`redis-check-rdb` (`redis-check-aof` for an AOF shard), which sets `sanitize-dump-payload yes` itself and walks
every compact encoding without holding the dataset. A shard that fails any of it is a damaged set (VerifyError)
before a single key is written anywhere. A scratch server then loads the placed files (hard links of them; a copy
of the AOF files Redis appends to), so the stored file is never read again, also when a shard is loaded twice
(`--on-conflict fail`).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

from clusterbak.engine.verify import check_file
from clusterbak.errors import PreconditionError, StepFailed, VerifyError
from clusterbak.lab.procs import find_binary, free_base_port, is_our_redis, read_pid, start_standalone, stop_pid
from clusterbak.model.aofmanifest import needed, parse_aof_manifest, render_manifest
from clusterbak.model.manifest import ShardRecord
from clusterbak.model.names import check_bare_name
from clusterbak.plan.restore_keys import ServerVersion
from clusterbak.redisops.dumprestore import Pipe, wait_loaded
from clusterbak.storage.repository import StoredSet

SCRATCH_PREFIX = "clusterbak-scratch-"
CHECK_TIMEOUT = 3600.0  # redis-check-rdb/-aof on one placed shard
START_TIMEOUT = 8.0
# what Redis logs (rdb.c rdbReportError) when the RDB it loads fails a check of its content, e.g.
# "Internal error in RDB reading offset 0, function at rdb.c:2291 -> Hash listpack integrity check failed."
_CORRUPT = re.compile(r"Internal error in RDB reading offset \d+, function at (rdb\.c:\d+) -> (.*)")


def scratch_server_version() -> ServerVersion:
    """What `redis-server --version` on this host is (the binary scratch servers run)."""
    binary = find_binary("redis-server")
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
    found = re.search(r"^(\w+) server v=(\S+)", out)
    if not found:
        raise PreconditionError(f"{binary} --version printed {out.strip()!r}; cannot tell which server it is")
    return ServerVersion("valkey" if found.group(1).lower() == "valkey" else "redis", found.group(2))


@dataclass(frozen=True, slots=True)
class PlacedShard:
    """A shard's files, checked and placed in `dir` (place_shard); a scratch server loads them from its own dir."""

    index: int
    dir: Path
    label: str  # the stored file(s) the set names, for messages
    config: str  # the redis.conf lines that load the files
    links: tuple[str, ...] = ()  # files Redis only reads: hard-linked into a server's dir
    copies: tuple[str, ...] = ()  # files Redis appends to (the last incr AOF, a pre-7.0 single AOF): copied
    subdirs: tuple[str, ...] = ()
    place_seconds: float = 0.0  # reading, checking and writing the stored files
    check_seconds: float = 0.0  # redis-check-rdb/-aof on the placed files

    def link_into(self, dest: Path) -> None:
        """Give a scratch server's directory the files: no stored file is read, and the placed ones stay as they
        are for a second load (a server writes its AOF; an RDB it never writes in place)."""
        for sub in self.subdirs:
            (dest / sub).mkdir()
        for name in self.links:
            try:
                os.link(self.dir / name, dest / name)
            except OSError:  # a filesystem without hard links
                shutil.copyfile(self.dir / name, dest / name)
        for name in self.copies:
            shutil.copyfile(self.dir / name, dest / name)


def place_shard(root: Path, set_dir: StoredSet, shard: ShardRecord) -> PlacedShard:
    """Stream the shard's stored files once into a private dir under root, checking them as verify does, then have
    redis-check-rdb (redis-check-aof) deep-check the placed dump. VerifyError names the file and the reason."""
    where = Path(_mkdtemp(root, f"placed-{shard.index:02d}-"))
    try:
        t = time.monotonic()
        placed = _place(where, set_dir, shard)
        t1 = time.monotonic()
        _deep_check(placed, shard.aof is not None)
        return replace(placed, place_seconds=round(t1 - t, 3), check_seconds=round(time.monotonic() - t1, 3))
    except BaseException:
        shutil.rmtree(where, ignore_errors=True)
        raise


def _place(where: Path, set_dir: StoredSet, shard: ShardRecord) -> PlacedShard:
    if shard.aof is None:
        assert shard.file is not None  # an RDB shard
        _place_file(set_dir, shard.file, where / "dump.rdb", rdb=True)
        return PlacedShard(shard.index, where, set_dir.label(shard.file.path),
                           "dbfilename dump.rdb\nappendonly no\n", links=("dump.rdb",))
    aof = shard.aof
    label = set_dir.label(aof.folder)
    if aof.manifest_text is None:  # pre-7.0 single file: Redis 7 upgrades it when it loads
        (record,) = aof.files
        name = check_bare_name(aof.filename)
        _place_file(set_dir, record, where / name, rdb=False)
        return PlacedShard(shard.index, where, label,
                           f"appendonly yes\nappendfilename {aof.filename}\ndbfilename dump.rdb\n", copies=(name,))
    (where / "appendonlydir").mkdir()
    by_name = {f.name: f for f in aof.files}
    files = needed(parse_aof_manifest(aof.manifest_text))
    names = [f"appendonlydir/{check_bare_name(f.name)}" for f in files]
    for f, name in zip(files, names, strict=True):
        _place_file(set_dir, by_name[f.name], where / name, rdb=f.name.endswith(".rdb"))
    manifest = f"appendonlydir/{check_bare_name(aof.filename)}.manifest"
    (where / manifest).write_text(render_manifest(files))
    last_incr = names[-1] if files[-1].type == "i" else None
    return PlacedShard(shard.index, where, label,
                       f"appendonly yes\nappenddirname appendonlydir\nappendfilename {aof.filename}\n"
                       "dbfilename dump.rdb\n",
                       links=tuple(n for n in names if n != last_incr),
                       copies=(manifest,) + ((last_incr,) if last_incr else ()), subdirs=("appendonlydir",))


def _place_file(set_dir: StoredSet, record, dest: Path, rdb: bool) -> None:
    try:
        with open(dest, "xb") as out:
            result = check_file(set_dir, record, rdb, out)
    except OSError as exc:
        raise StepFailed(f"placing {set_dir.label(record.path)} into {dest.parent}: {exc.strerror or exc}") from exc
    if not result["ok"]:
        raise VerifyError(f"{result['file']}: {result['problem']}")


def _deep_check(placed: PlacedShard, aof: bool) -> None:
    """redis-check-rdb (or redis-check-aof: the RDB preamble goes through the same check) on the placed files."""
    tool = _check_tool("redis-check-aof" if aof else "redis-check-rdb")
    if not aof:
        path = placed.dir / "dump.rdb"
    elif placed.subdirs:
        path = next(placed.dir.glob("appendonlydir/*.manifest"))
    else:
        (name,) = placed.copies
        path = placed.dir / name
    try:
        run = subprocess.run([tool, str(path)], capture_output=True, text=True, errors="replace",
                             timeout=CHECK_TIMEOUT, cwd=placed.dir)
    except subprocess.TimeoutExpired as exc:
        raise StepFailed(f"{Path(tool).name} on shard {placed.index} took over {CHECK_TIMEOUT:.0f}s") from exc
    if run.returncode != 0:
        raise VerifyError(f"{placed.label} (shard {placed.index}): {Path(tool).name} refused it "
                          f"({_check_reason(run.stdout + run.stderr)})")


def _check_tool(name: str) -> str:
    """The checker beside the redis-server scratch servers run (the same build), else the one on PATH."""
    beside = Path(find_binary("redis-server")).with_name(name)
    return str(beside) if beside.exists() else find_binary(name)


def _check_reason(out: str) -> str:
    """One line from redis-check-rdb/-aof's output: Redis's own reason for the first error."""
    found = _CORRUPT.search(out)
    if found is not None:
        return _corrupt_reason(found)
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    for i, line in enumerate(lines[:-1]):
        if line == "--- RDB ERROR DETECTED ---":
            return re.sub(r"^\[offset \d+\] ", "", lines[i + 1])
    return lines[-1] if lines else "no output"


def _corrupt_reason(found: re.Match) -> str:
    reason = found.group(2).split(". Failure loading rdb format")[0]  # an AOF's RDB preamble adds this
    return f"{reason.strip().rstrip('.')}, {found.group(1)}"


class ScratchServer:
    """Use as a context manager: the server is stopped by pid and its directory removed on every exit path."""

    def __init__(self, root: Path, placed: PlacedShard, load_timeout: float = 600.0,
                 debug_option: bool = False) -> None:
        """placed: the shard's checked files (place_shard). debug_option: the server knows `enable-debug-command`
        (Redis/Valkey 7+): DEBUG DIGEST-VALUE from loopback is allowed (restore-keys compares values with it); older
        servers allow DEBUG anyway."""
        self.root, self.placed, self.load_timeout = root, placed, load_timeout
        self.index = placed.index
        self.debug_option = debug_option
        self.dir: Path | None = None
        self.pid: int | None = None
        self.port = 0
        self.password = secrets.token_hex(16)
        self._fake_master: socket.socket | None = None
        self.fake_master_port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def pipe(self, timeout: float = 120.0) -> Pipe:
        return Pipe(self.address, password=self.password, timeout=timeout)

    def __enter__(self) -> ScratchServer:
        try:
            self._start()
        except StepFailed as exc:
            log, corrupt = self._log_tail(), self._corruption()
            self.close()
            if corrupt:
                raise VerifyError(f"{self.placed.label} (shard {self.index}) is damaged: the scratch server's "
                                  f"deep check of its values refused it ({corrupt}); nothing of that shard was "
                                  "written") from exc
            raise StepFailed(f"scratch server for shard {self.index} did not come up: {exc}"
                             + (f"; its log ended with: {log}" if log else "")) from exc
        except BaseException:
            self.close()
            raise
        return self

    def _log_tail(self) -> str:
        """The last lines of the scratch server's log (its directory is removed right after)."""
        try:
            lines = (self.dir / "redis.log").read_text(errors="replace").strip().splitlines() if self.dir else []
        except OSError:
            return ""
        return " | ".join(line.strip() for line in lines[-3:])

    def _corruption(self) -> str:
        """Redis's reason when it stopped loading on a value that failed its checks ('' for any other failure)."""
        try:
            text = (self.dir / "redis.log").read_text(errors="replace") if self.dir else ""
        except OSError:
            return ""
        found = _CORRUPT.search(text)
        return "" if found is None else _corrupt_reason(found)

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self) -> None:
        self.dir = Path(_mkdtemp(self.root, f"shard-{self.index:02d}-"))
        self.placed.link_into(self.dir)
        extra = self.placed.config
        # a master address nobody can answer on: bound by us, never listening -> connection refused
        self._fake_master = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._fake_master.bind(("127.0.0.1", 0))
        fake_port = self.fake_master_port = self._fake_master.getsockname()[1]
        self.port = _free_port()
        extra += (f"requirepass {self.password}\nreplicaof 127.0.0.1 {fake_port}\nreplica-serve-stale-data yes\n"
                  "notify-keyspace-events Ex\nclient-output-buffer-limit pubsub 0 0 0\nhz 100\n"
                  "auto-aof-rewrite-percentage 0\nprotected-mode yes\n"
                  # MIGRATE ... COPY is a write command to Redis: a read-only replica would refuse it. Nothing else
                  # writes here, and COPY leaves the keyspace as it is
                  "replica-read-only no\n"
                  + ("enable-debug-command local\n" if self.debug_option else "")
                  # DUMP payloads without LZF: trying to compress every value halved DUMP throughput (500-byte
                  # random values, one scratch server: ~75k -> 130-170k keys/s), and RESTORE then has nothing to undo
                  + "rdbcompression no\n"
                  # deep-check every listpack/ziplist/intset/stream entry while loading (module docstring)
                  + "sanitize-dump-payload yes\n")
        # Redis listens before it loads (PING answers LOADING), so a server that is not up within seconds has
        # exited, e.g. on a dump it cannot read
        self.pid = start_standalone(self.dir, self.port, extra, timeout=START_TIMEOUT)
        pipe = self.pipe()
        try:
            size = sum(p.stat().st_size for p in self.dir.rglob("*") if p.is_file())
            wait_loaded(pipe, max(self.load_timeout, size / 20e6))
        finally:
            pipe.close()

    def close(self) -> None:
        try:
            if self.pid is None and self.dir is not None:  # a start that gave up waiting may have left one running
                pid = read_pid(self.dir / "redis.pid")
                if pid is not None and is_our_redis(pid, self.dir / "redis.conf"):
                    self.pid = pid
            if self.pid is not None:
                stop_pid(self.pid)
                self.pid = None
        finally:
            if self._fake_master is not None:
                self._fake_master.close()
                self._fake_master = None
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)
                self.dir = None


_PORTS_LOCK = threading.Lock()
_PORTS_GIVEN: set[int] = set()


def _free_port() -> int:
    """A loopback port the kernel just had free, never the same twice in this process (parallel shards)."""
    with _PORTS_LOCK:
        for _ in range(100):
            port = free_base_port(1)  # below the ephemeral range: no outgoing connection can take it meanwhile
            if port not in _PORTS_GIVEN:
                _PORTS_GIVEN.add(port)
                return port
    raise StepFailed("no free loopback port for a scratch server")


def _mkdtemp(root: Path, prefix: str) -> str:
    import tempfile

    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    return tempfile.mkdtemp(prefix=prefix, dir=root)
