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
"""

from __future__ import annotations

import re
import secrets
import shutil
import socket
import subprocess
import threading
from pathlib import Path

from clusterbak.errors import PreconditionError, StepFailed, VerifyError
from clusterbak.lab.procs import find_binary, free_base_port, is_our_redis, read_pid, start_standalone, stop_pid
from clusterbak.model.aofmanifest import needed, parse_aof_manifest, render_manifest
from clusterbak.model.manifest import ShardRecord, StoredFile
from clusterbak.model.names import check_bare_name
from clusterbak.plan.restore_keys import ServerVersion
from clusterbak.redisops.dumprestore import Pipe, wait_loaded
from clusterbak.storage.reader import VerifiedReader
from clusterbak.storage.repository import StoredSet

SCRATCH_PREFIX = "clusterbak-scratch-"
_COPY_BUFFER = 1 << 20
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


class ScratchServer:
    """Use as a context manager: the server is stopped by pid and its directory removed on every exit path."""

    def __init__(self, root: Path, set_dir: StoredSet, shard: ShardRecord, load_timeout: float = 600.0,
                 debug_option: bool = False) -> None:
        """debug_option: the server knows `enable-debug-command` (Redis/Valkey 7+): DEBUG DIGEST-VALUE from
        loopback is allowed (restore-keys compares values with it); older servers allow DEBUG anyway."""
        self.root, self.set_dir, self.shard, self.load_timeout = root, set_dir, shard, load_timeout
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
                raise VerifyError(f"{self._files_label()} (shard {self.shard.index}) is damaged: the scratch server's "
                                  f"deep check of its values refused it ({corrupt}); nothing of that shard was "
                                  "written") from exc
            raise StepFailed(f"scratch server for shard {self.shard.index} did not come up: {exc}"
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
        if found is None:
            return ""
        reason = found.group(2).split(". Failure loading rdb format")[0]  # an AOF's RDB preamble adds this
        return f"{reason.strip().rstrip('.')}, {found.group(1)}"

    def _files_label(self) -> str:
        files = [self.shard.file] if self.shard.aof is None else list(self.shard.aof.files)
        return ", ".join(self.set_dir.label(f.path) for f in files if f is not None)

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self) -> None:
        self.dir = Path(_mkdtemp(self.root, f"shard-{self.shard.index:02d}-"))
        extra = self._place()
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

    def _place(self) -> str:
        """Decompress the shard's stored files into the scratch dir (hashed as they stream: a file that differs from
        the manifest fails the run); return the config lines that load them."""
        assert self.dir is not None  # made by __enter__ before anything is placed
        if self.shard.aof is None:
            assert self.shard.file is not None  # an RDB shard
            _copy(self.set_dir, self.shard.file, self.dir / "dump.rdb")
            return "dbfilename dump.rdb\nappendonly no\n"
        aof = self.shard.aof
        if aof.manifest_text is None:  # pre-7.0 single file: Redis 7 upgrades it when it loads
            (record,) = aof.files
            _copy(self.set_dir, record, self.dir / check_bare_name(aof.filename))
            return f"appendonly yes\nappendfilename {aof.filename}\ndbfilename dump.rdb\n"
        folder = self.dir / "appendonlydir"
        folder.mkdir()
        by_name = {f.name: f for f in aof.files}
        files = needed(parse_aof_manifest(aof.manifest_text))
        for f in files:
            _copy(self.set_dir, by_name[f.name], folder / check_bare_name(f.name))
        (folder / f"{check_bare_name(aof.filename)}.manifest").write_text(render_manifest(files))
        return f"appendonly yes\nappenddirname appendonlydir\nappendfilename {aof.filename}\ndbfilename dump.rdb\n"

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


def _copy(set_dir: StoredSet, record: StoredFile, dest: Path) -> None:
    with open(dest, "xb") as out:
        shutil.copyfileobj(VerifiedReader(set_dir, record), out, _COPY_BUFFER)

