"""restore-keys: copy selected keys of a backup set into a live target, shard by shard, through a scratch server.

First every needed shard is placed under the run's scratch root and checked (scratch.place_shard: the stored file
read once with its hashes and CRC64, then redis-check-rdb deep-checks the placed dump): a damaged set stops the run
before any key is written. Then, per needed shard: load it into a scratch redis-server (as a replica of nothing, so
no key is dropped while loading), promote it for a moment and touch the selection so the keys whose TTL has passed
since the backup expire and are named by keyspace events, demote it (its keyspace is then frozen), then copy the
selection in batches to the target master that owns each key's slot. Two ways to copy:

- MIGRATE (a write run whose keys keep their names and TTLs, to a plain-TCP target): the scratch server itself DUMPs
  a batch of keys and RESTOREs them into one target master (`MIGRATE ... COPY [REPLACE] KEYS ...`); clusterbak only
  names the keys. With `--on-conflict skip` the target is asked EXISTS first and only absent keys are sent.
- DUMP/RESTORE (everything else, and any batch MIGRATE failed on): SCAN/DUMP/PEXPIRETIME here and RESTORE ... ABSTTL
  each key into its target master, pipelined.

A dry run does the DUMP reads and asks the target EXISTS instead of writing. `--on-conflict fail` runs that dry pass
first and writes nothing if any selected key exists.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from clusterbak.engine.scratch import SCRATCH_PREFIX, PlacedShard, ScratchServer, place_shard, scratch_server_version
from clusterbak.errors import PreconditionError, StepFailed, VerifyError
from clusterbak.model.manifest import Manifest, ShardRecord
from clusterbak.plan.restore_keys import (
    SCRATCH_MOVE,
    RestoreKeysPlan,
    Selection,
    glob_match,
    key_slot,
    payload_rdb_version,
    payload_type,
    plan_restore_keys,
    scratch_space_refusal,
    slot_owner_table,
    slot_range_of,
)
from clusterbak.redisops.connect import ConnectionOptions
from clusterbak.redisops.dumprestore import (
    EXPIRED_CHANNEL,
    SCAN_COUNT,
    Pipe,
    ReplyError,
    dump_commands,
    exists_command,
    migrate_command,
    open_pipe,
    read_target,
    restore_command,
    scan,
)
from clusterbak.storage.repository import StoredSet

Event = Callable[[str, dict], None]
NAME_BATCH = 1000
IN_FLIGHT = 2  # batches of RESTOREs a target master may still be working on while the next batch is read
TOUCH_COUNT = 10000  # SCAN COUNT while only touching keys (nothing is read per key)
MAX_ERRORS = 5
MIGRATE_BATCH = 5000  # keys per MIGRATE at most (one target master each)
MIGRATE_BYTES = 8 << 20  # ... and about this much data: the scratch server builds a MIGRATE's payload in memory
MIGRATE_IN_FLIGHT = 2  # MIGRATEs queued on a scratch server behind the one it runs
MIGRATE_TIMEOUT_MS = 5000  # MIGRATE's connect and per-reply timeout; a batch that runs into it is redone by DUMP
_MISSES = re.compile(rb"keyspace_misses:(\d+)")


@dataclass
class MasterTally:
    address: str
    restored: int = 0
    skipped_existing: int = 0
    skipped_expired: int = 0
    failed: int = 0
    exist_on_target: int = 0
    bytes: int = 0  # DUMP payload bytes that passed through clusterbak (MIGRATE moves them server to server)
    batches_migrate: int = 0  # batches the scratch servers MIGRATEd here
    batches_dump: int = 0  # batches copied by DUMP here + RESTORE there (fallbacks included)
    batches_fallback: int = 0  # of those, batches MIGRATE failed on first


@dataclass
class ShardTally:
    index: int
    source: str
    selected: int = 0
    expired: int = 0
    missing: int = 0
    exist_on_target: int = 0
    bytes: int = 0
    place_seconds: float = 0.0  # its stored files read once, checked, written under the scratch root
    check_seconds: float = 0.0  # redis-check-rdb/-aof on them
    load_seconds: float = 0.0
    copy_seconds: float = 0.0


@dataclass
class Run:
    plan: RestoreKeysPlan
    write: bool
    masters: list[MasterTally]
    table: list[int]
    shards: list[ShardTally] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    existing_examples: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # why batches left the MIGRATE path
    why_dump: str | None = None  # why no batch took the MIGRATE path (None: MIGRATE was used)

    def master_of(self, name: bytes) -> MasterTally:
        return self.masters[self.table[key_slot(name)]]

    def report(self, seconds: float, place_seconds: float = 0.0) -> dict:
        totals = {k: sum(getattr(m, k) for m in self.masters) for k in _COUNTS}
        totals["selected"] = sum(s.selected for s in self.shards)
        totals["missing"] = sum(s.missing for s in self.shards)
        return {"backup_id": self.plan.backup_id, "mode": "write" if self.write else "dry-run",
                "shards": [asdict(s) for s in self.shards], "masters": [asdict(m) for m in self.masters],
                "totals": totals, "errors": self.errors, "seconds": round(seconds, 3),
                "place_seconds": round(place_seconds, 3),  # every needed shard placed and checked, before the copy
                "copy": {"migrate": self.why_dump is None, "why_dump": self.why_dump, "notes": self.notes},
                "keys_per_second": round(totals["selected"] / seconds) if seconds else None}


_COUNTS = ("restored", "skipped_existing", "skipped_expired", "failed", "exist_on_target", "bytes", "batches_migrate",
           "batches_dump", "batches_fallback")


def migrate_batch(shard: ShardRecord) -> int:
    """Keys per MIGRATE for this shard: MIGRATE_BATCH, fewer when its keys are big on average."""
    size = sum(f.raw_size or f.stored_size for f in shard.files)
    return max(1, min(MIGRATE_BATCH, MIGRATE_BYTES * max(shard.keys, 1) // max(size, 1)))


def prepare_restore_keys(manifest: Manifest, selection: Selection, target: ConnectionOptions, standalone: bool,
                         on_conflict: str = "skip", ttl: str = "keep", rename_prefix: bytes = b"") -> RestoreKeysPlan:
    """Read the target as it is now (its masters, slots and versions; standalone: the seed) and this host's scratch
    server version, and plan the copy (refusals in the plan)."""
    return plan_restore_keys(manifest, selection, read_target(target, standalone), standalone,
                             scratch_server_version(), on_conflict, ttl, rename_prefix)


def why_not_migrate(plan: RestoreKeysPlan, target: ConnectionOptions, write: bool) -> str | None:
    """Why the keys cannot go by MIGRATE (the scratch server writing into the target itself), or None."""
    if not write:
        return "dry run"
    if plan.rename_prefix:
        return "--rename-prefix (MIGRATE keeps the names)"
    if plan.ttl == "drop":
        return "--ttl drop (MIGRATE keeps the TTLs)"
    if plan.selection.types:
        return "--type (the type is read from each DUMP payload)"
    if target.tls:
        return "a TLS target (scratch servers speak plain TCP)"
    if target.username and target.password() and plan.scratch.parts < (6, 0):
        return f"a target user with {plan.scratch} as the scratch server (MIGRATE AUTH2 needs 6.0)"
    return None


def check_scratch_space(plan: RestoreKeysPlan, scratch_root: Path | None, statvfs=os.statvfs) -> Path:
    """The directory the scratch root goes in, refused (exit 3) when the needed shards' dumps do not fit there."""
    where = Path(scratch_root) if scratch_root is not None else Path(tempfile.gettempdir())
    try:
        st = statvfs(where)
    except OSError as exc:
        raise PreconditionError(f"scratch root {where}: {exc.strerror or exc}; give {SCRATCH_MOVE}") from exc
    why = scratch_space_refusal(str(where), plan.place_bytes, st.f_bavail * st.f_frsize)
    if why:
        raise PreconditionError(why)
    return where


def place_needed(root: Path, set_dir: StoredSet, manifest: Manifest, plan: RestoreKeysPlan,
                 on_event: Event = lambda k, d: None) -> dict[int, PlacedShard]:
    """Every needed shard's stored files read once, checked (sha256, RDB CRC64) and placed under root, each placed
    dump deep-checked by redis-check-rdb/-aof. Shards at once: sha256, zstd and the checkers use every core.
    Any failure raises (the first in shard order; a damaged file is VerifyError) before anything is written."""
    by_index = {s.index: s for s in manifest.shards}
    shards = [by_index[s.index] for s in plan.shards]
    on_event("placing", {"shards": len(shards), "bytes": plan.place_bytes})

    def one(shard: ShardRecord) -> PlacedShard | BaseException:
        try:
            return place_shard(root, set_dir, shard)
        except Exception as exc:  # collected: every shard is tried, the first failure in shard order is raised
            return exc

    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1, len(shards) or 1)),
                            thread_name_prefix="restore-keys-place") as pool:
        results = list(pool.map(one, shards))
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        for r in results:
            if isinstance(r, PlacedShard):
                shutil.rmtree(r.dir, ignore_errors=True)
        damaged = [r for r in failed if isinstance(r, VerifyError)]
        if not damaged:
            raise failed[0]
        raise VerifyError(f"backup {plan.backup_id} is damaged, nothing was written: {damaged[0]}"
                          + (f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else "")) from damaged[0]
    placed = {p.index: p for p in results if isinstance(p, PlacedShard)}
    on_event("placed", {"shards": len(placed)})
    return placed


def run_restore_keys(
    plan: RestoreKeysPlan,
    set_dir: StoredSet,
    manifest: Manifest,
    target: ConnectionOptions,
    write: bool,
    scratch_root: Path | None = None,
    on_event: Event = lambda k, d: None,
    parallel: int = 1,
    before_writing: Callable[[], None] = lambda: None,
) -> dict:
    """Dry run (write=False) or real run. First every needed shard is placed and checked (place_needed): a damaged
    set stops the run there, before any key is written. Then `before_writing` (the CLI's confirmation), then the
    passes. Scratch servers and placed files live under scratch_root and are gone when this returns."""
    if not plan.ok:
        raise PreconditionError("refusing a plan with refusals: " + "; ".join(plan.refusals))
    t0 = time.monotonic()
    where = check_scratch_space(plan, scratch_root)
    with _scratch_root(where) as root:  # SIGTERM unwinds like Ctrl-C (cli/entry.py)
        placed = place_needed(root, set_dir, manifest, plan, on_event)
        placing = time.monotonic() - t0
        before_writing()
        if write and plan.on_conflict == "fail":
            check = _pass(plan, placed, manifest, target, False, root, on_event, parallel, last=False)
            existing = sum(m.exist_on_target for m in check.masters)
            if existing:
                raise PreconditionError(
                    f"{existing} selected keys already exist on the target (for example "
                    f"{', '.join(check.existing_examples)}); nothing was written (--on-conflict fail)")
            on_event("checked", {"existing": 0})
        run = _pass(plan, placed, manifest, target, write, root, on_event, parallel, last=True)
    return run.report(time.monotonic() - t0, placing)


def _pass(
    plan: RestoreKeysPlan,
    placed: dict[int, PlacedShard],
    manifest: Manifest,
    target: ConnectionOptions,
    write: bool,
    root: Path,
    on_event: Event,
    parallel: int,
    last: bool,
) -> Run:
    """Every shard of the plan, `parallel` at a time (each its own scratch server and target connections).
    On an error or an interrupt the other shards stop at their next batch; their sockets are shut so a blocked
    read returns at once, and each job removes its scratch server on the way out. In the last pass a shard's
    placed files are removed as soon as it is done (the disk is given back shard by shard)."""
    run = _new_run(plan, write, target)
    by_index = {s.index: s for s in manifest.shards}
    jobs = [_ShardJob(plan, write, placed[s.index], by_index[s.index], s.source, target, root, on_event, last)
            for s in plan.shards]
    pool = ThreadPoolExecutor(max_workers=max(1, min(parallel, len(jobs) or 1)), thread_name_prefix="restore-keys")
    try:
        futures = [pool.submit(job.run) for job in jobs]
        for future in futures:
            _merge(run, future.result())
    except BaseException:
        for job in jobs:
            job.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return run


def _new_run(plan: RestoreKeysPlan, write: bool, target: ConnectionOptions) -> Run:
    return Run(plan, write, [MasterTally(m.address) for m in plan.masters],
               slot_owner_table([(m.address, m.slots) for m in plan.masters]),
               why_dump=why_not_migrate(plan, target, write))


def _merge(into: Run, part: Run) -> None:
    for total, one in zip(into.masters, part.masters, strict=True):
        for name in _COUNTS:
            setattr(total, name, getattr(total, name) + getattr(one, name))
    into.shards.extend(part.shards)
    into.errors.extend(part.errors[:MAX_ERRORS - len(into.errors)])
    into.existing_examples.extend(part.existing_examples[:3 - len(into.existing_examples)])
    into.notes.extend(part.notes[:MAX_ERRORS - len(into.notes)])


class _ShardJob:
    def __init__(self, plan, write, placed, shard, source, target, root, on_event, last) -> None:
        self.plan, self.write, self.placed, self.shard, self.source = plan, write, placed, shard, source
        self.target, self.root, self.on_event, self.last = target, root, on_event, last
        self.cancelled = threading.Event()
        self.pipes: list[Pipe] = []
        self.lock = threading.Lock()

    def cancel(self) -> None:
        self.cancelled.set()
        with self.lock:
            for p in self.pipes:
                p.abort()

    def _open(self, make) -> Pipe:
        pipe = make()
        with self.lock:
            self.pipes.append(pipe)
            if self.cancelled.is_set():
                pipe.abort()
        return pipe

    def run(self) -> Run:
        run = _new_run(self.plan, self.write, self.target)
        tally = ShardTally(self.shard.index, self.source, place_seconds=self.placed.place_seconds,
                           check_seconds=self.placed.check_seconds)
        run.shards.append(tally)
        try:
            if self.cancelled.is_set():
                raise KeyboardInterrupt
            self.on_event("loading", {"shard": tally.index})
            t = time.monotonic()
            targets = [self._open(lambda m=m: open_pipe(self.target, m.address)) for m in self.plan.masters]
            with ScratchServer(self.root, self.placed, debug_option=self.plan.scratch.parts >= (7, 0)) as scratch:
                tally.load_seconds = round(time.monotonic() - t, 3)
                self.on_event("loaded", {"shard": tally.index, "seconds": tally.load_seconds})
                t = time.monotonic()
                _copy_shard(run, tally, scratch, self.shard, targets, self)
                tally.copy_seconds = round(time.monotonic() - t, 3)
            self.on_event("shard", asdict(tally))
            return run
        finally:
            with self.lock:
                for p in self.pipes:
                    p.close()
            if self.last:
                shutil.rmtree(self.placed.dir, ignore_errors=True)


def _copy_shard(run: Run, tally: ShardTally, scratch: ScratchServer, shard: ShardRecord, pipes: list[Pipe],
                job: _ShardJob) -> None:
    sel = run.plan.selection
    shard_slots = {s for text in shard.slots for r in [slot_range_of(text)] for s in range(r.start, r.end + 1)}
    reader, events = job._open(scratch.pipe), job._open(scratch.pipe)
    try:
        for name in _expired_since_backup(reader, events, scratch, sel, shard_slots):
            tally.expired += 1
            run.master_of(_final(run, name)).skipped_expired += 1
        events.close()
        time.sleep(0.05)  # a few cron ticks (hz 100): a shrink of the keyspace after those deletions has begun
        expire_cmd = "PEXPIRETIME" if run.plan.scratch.parts >= (7, 0) else "PTTL"
        dump = _DumpStage(run, tally, job._open(scratch.pipe), pipes, expire_cmd)
        migrate = None
        if run.why_dump is None:
            migrate = _MigrateStage(run, tally, job._open(scratch.pipe),
                                    [job._open(lambda a=m.address: open_pipe(job.target, a)) for m in run.plan.masters]
                                    if run.plan.on_conflict == "skip" else None, job.target, dump,
                                    migrate_batch(shard))
        scanner = job._open(scratch.pipe)
        for keys, named in _batches(scanner, sel, shard_slots):
            if job.cancelled.is_set():
                raise KeyboardInterrupt
            if migrate is not None and not named:  # named keys: DUMP tells "not in the backup" apart per key
                migrate.push(keys)
            else:
                dump.push(keys, named)
        if migrate is not None:
            migrate.drain()
        dump.drain()
    finally:
        reader.close()
        events.close()


class _DumpStage:
    """DUMP + PEXPIRETIME on the scratch server, RESTORE ... ABSTTL on the target masters, three stages at once:
    the scratch server DUMPs batch k while this thread routes batch k-1 and the target masters RESTORE batches k-2
    and k-3."""

    def __init__(self, run: Run, tally: ShardTally, reader: Pipe, pipes: list[Pipe], expire_cmd: str) -> None:
        self.run, self.tally, self.reader, self.pipes, self.expire_cmd = run, tally, reader, pipes, expire_cmd
        self.pending: deque = deque()  # batches sent to the target whose replies are not read yet
        self.read: tuple | None = None  # the batch DUMPed last, not yet sent on
        self.recheck: list = []  # (master, name, payload): BUSYKEY in a redone batch, compared at the end

    def push(self, keys: list[bytes], named: bool, redo: bool = False) -> None:
        self.reader.send_packed(dump_commands(keys, self.expire_cmd.encode()))
        self._send_on()
        while len(self.pending) > IN_FLIGHT:
            _finish(self.run, self.pipes, self.pending.popleft(), self.recheck)
        self.read = (keys, self.reader.read(2 * len(keys)), named, redo)

    def _send_on(self) -> None:
        if self.read is not None:
            keys, replies, named, redo = self.read
            self.pending.append(_dispatch(self.run, self.tally, self.pipes, keys, replies, named, redo,
                                          self.expire_cmd))
            self.read = None

    def drain(self) -> None:
        self._send_on()
        while self.pending:
            _finish(self.run, self.pipes, self.pending.popleft(), self.recheck)
        if self.recheck:
            _recheck(self.run, self.pipes, self.reader, self.recheck)
            self.recheck.clear()


class _MigrateStage:
    """Keys grouped by target master into batches the scratch server MIGRATEs itself. Each MIGRATE is followed by
    INFO stats: its keyspace_misses grow by the keys MIGRATE did not find (expired since SCAN named them), the only
    per-key fact this path needs. A batch MIGRATE fails on is redone through the DUMP stage; after an error other
    than a key created meanwhile (BUSYKEY), that master gets only DUMP batches.

    With `skip`, a master is asked EXISTS before each batch only if it held keys when the run was planned, or once a
    MIGRATE to it answered BUSYKEY: into an empty master (a reshape) the check cost ~1 us of target CPU and ~0.5 us
    here per key, and a key written there since the plan is still left alone (BUSYKEY, the batch redone by DUMP and
    its keys compared)."""

    def __init__(self, run: Run, tally: ShardTally, scratch: Pipe, checkers: list[Pipe] | None,
                 target: ConnectionOptions, dump: _DumpStage, batch: int) -> None:
        self.run, self.tally, self.scratch, self.checkers, self.dump = run, tally, scratch, checkers, dump
        self.batch = batch
        self.replace = run.plan.on_conflict == "replace"
        self.username, self.password = target.username, target.password()
        self.table = run.table
        self.groups: dict[int, list[bytes]] = defaultdict(list)
        self.dump_only: set[int] = set()
        self.check = {i for i, m in enumerate(run.plan.masters) if m.keys}  # masters asked EXISTS first (skip)
        self.pending: deque = deque()
        self.misses = self._misses(scratch.call("INFO", "stats"))

    def push(self, keys: list[bytes]) -> None:
        table, groups, dump_only, batch = self.table, self.groups, self.dump_only, self.batch
        other: list[bytes] = []
        for key in keys:
            index = table[key_slot(key)]
            if index in dump_only:
                other.append(key)
                continue
            group = groups[index]
            group.append(key)
            if len(group) >= batch:
                self._send(index, groups.pop(index))
        if other:
            self.dump.push(other, False)

    def drain(self) -> None:
        for index in list(self.groups):
            self._send(index, self.groups.pop(index))
        while self.pending:
            self._finish()

    def _send(self, index: int, keys: list[bytes]) -> None:
        if index in self.dump_only:
            self.dump.push(keys, False)
            return
        master = self.run.masters[index]
        if self.checkers is not None and index in self.check:  # skip: only the keys the target does not have
            pipe = self.checkers[index]
            pipe.send_packed(b"".join([exists_command(k) for k in keys]))
            absent, unsure = [], []
            for key, reply in zip(keys, pipe.read(len(keys)), strict=True):
                if reply == 0:
                    absent.append(key)
                elif reply == 1:
                    master.skipped_existing += 1
                else:
                    unsure.append(key)
            self.tally.selected += len(keys) - len(absent) - len(unsure)
            if unsure:
                self.dump.push(unsure, False)
            keys = absent
        if not keys:
            return
        self.scratch.send_packed(migrate_command(master.address, keys, MIGRATE_TIMEOUT_MS, self.replace, self.username,
                                                 self.password) + _INFO_STATS)
        self.pending.append((index, keys))
        while len(self.pending) > MIGRATE_IN_FLIGHT:
            self._finish()

    def _finish(self) -> None:
        index, keys = self.pending.popleft()
        reply, info = self.scratch.read(2)
        misses = self._misses(info)
        gone, self.misses = misses - self.misses, misses
        master = self.run.masters[index]
        if reply in (b"OK", b"NOKEY"):
            master.restored += len(keys) - gone
            master.skipped_expired += gone
            master.batches_migrate += 1
            self.tally.expired += gone
            self.tally.selected += len(keys) - gone
            return
        why = str(reply)
        if "BUSYKEY" in why:
            self.check.add(index)
        elif index not in self.dump_only:
            self.dump_only.add(index)
            why += "; its later batches go by DUMP/RESTORE"
        if len(self.run.notes) < MAX_ERRORS:
            self.run.notes.append(f"{master.address}: MIGRATE of {len(keys)} keys failed ({why}); "
                                  "redone by DUMP/RESTORE")
        master.batches_fallback += 1
        self.dump.push(keys, False, redo=True)

    def _misses(self, info) -> int:
        found = _MISSES.search(info) if isinstance(info, bytes) else None
        if found is None:
            raise StepFailed(f"scratch server {self.scratch.address}: INFO stats has no keyspace_misses: {info!r}")
        return int(found.group(1))


_INFO_STATS = b"*2\r\n$4\r\nINFO\r\n$5\r\nstats\r\n"


def _expired_since_backup(reader: Pipe, events: Pipe, scratch: ScratchServer, sel: Selection,
                          shard_slots: set[int]) -> Iterator[bytes]:
    """Promote, touch every selected key (a key past its TTL is then deleted and named on the expired channel),
    demote, and yield the selected names that expired."""
    events.call("SUBSCRIBE", EXPIRED_CHANNEL)
    reader.call("REPLICAOF", "NO", "ONE")
    for keys, named in _batches(reader, sel, shard_slots, TOUCH_COUNT):
        if named:
            reader.send([("EXISTS", k) for k in keys])
            reader.read(len(keys))
    reader.call("REPLICAOF", "127.0.0.1", scratch.fake_master_port)
    marker = b"clusterbak-end-" + str(time.time_ns()).encode()
    reader.call("PUBLISH", EXPIRED_CHANNEL, marker)
    while True:
        (msg,) = events.read(1)
        if isinstance(msg, list) and len(msg) == 3 and msg[0] == b"message":
            if msg[2] == marker:
                return
            if sel.selects(msg[2]):
                yield msg[2]


def _batches(reader: Pipe, sel: Selection, shard_slots: set[int],
             count: int = SCAN_COUNT) -> Iterator[tuple[list[bytes], bool]]:
    """(key names, named?) in batches: SCAN [MATCH] for globs or everything, then the --keys-from names that no
    glob covers and that hash to this shard. Keys outside --slots, or matched by an earlier glob, are left out."""
    if sel.patterns or sel.everything:
        for pattern, earlier in sel.scans():
            for keys in scan(reader, pattern, count):
                if sel.slots or earlier:
                    keys = [k for k in keys if sel.in_slots(k) and not any(glob_match(p, k) for p in earlier)]
                if keys:
                    yield keys, False
    names = [n for n in sel.names if key_slot(n) in shard_slots and sel.in_slots(n)
             and not any(glob_match(p, n) for p in sel.patterns)]
    for i in range(0, len(names), NAME_BATCH):
        yield names[i:i + NAME_BATCH], True


def _final(run: Run, name: bytes) -> bytes:
    return run.plan.rename_prefix + name if run.plan.rename_prefix else name


def _dispatch(run: Run, tally: ShardTally, pipes: list[Pipe], keys: list[bytes], replies: list, named: bool,
              redo: bool, expire_cmd: str) -> list:
    """Turn one batch of DUMP/expire replies into RESTORE (or EXISTS for a dry run) per target master; send them.
    Returns what _finish needs to read the answers (for a batch MIGRATE failed on, `redo`: the payloads too)."""
    plan, sel = run.plan, run.plan.selection
    now_ms = int(time.time() * 1000)
    absolute_expiry = expire_cmd == "PEXPIRETIME"
    keep_ttl, replace, prefix, table, write = plan.ttl == "keep", plan.on_conflict == "replace", plan.rename_prefix, \
        run.table, run.write
    top = plan.payload_version or 0xFFFF
    per_master: dict[int, list[bytes]] = defaultdict(list)
    names: dict[int, list[bytes]] = defaultdict(list)
    sizes: dict[int, int] = defaultdict(int)
    payloads: dict[int, list[bytes]] = defaultdict(list)
    for i, key in enumerate(keys):
        payload, expire = replies[2 * i], replies[2 * i + 1]
        if payload.__class__ is not bytes or expire.__class__ is not int or expire == -2:
            _unreadable(run, tally, key, payload, expire, named)
            continue
        if sel.types and payload_type(payload) not in sel.types:
            continue
        name = prefix + key if prefix else key
        index = table[key_slot(name)]
        absolute = (expire if absolute_expiry else now_ms + expire) if expire >= 0 else 0
        if absolute and absolute <= now_ms:
            tally.expired += 1
            run.masters[index].skipped_expired += 1
            continue
        if int.from_bytes(payload[-10:-8], "little") > top:
            raise PreconditionError(f"the scratch server dumped {key!r} as RDB version {payload_rdb_version(payload)}, "
                                    f"newer than the {top} planned for the target; stopped before writing it")
        per_master[index].append(restore_command(name, absolute if keep_ttl else 0, payload, replace) if write
                                 else exists_command(name))
        names[index].append(name)
        if redo:
            payloads[index].append(payload)
        sizes[index] += len(payload)
    for index, cmds in per_master.items():
        pipes[index].send_packed(b"".join(cmds))
        run.masters[index].batches_dump += 1
        run.masters[index].bytes += sizes[index]
        tally.bytes += sizes[index]
        tally.selected += len(cmds)
    return [(index, names[index], payloads[index] if redo else None) for index in per_master]


def _unreadable(run: Run, tally: ShardTally, key: bytes, payload, expire, named: bool) -> None:
    """A key the scratch server did not DUMP: an error, or gone (named: not in the backup; scanned: it expired)."""
    master = run.master_of(_final(run, key))
    if isinstance(payload, ReplyError) or isinstance(expire, ReplyError):
        bad = payload if isinstance(payload, ReplyError) else expire
        _error(run, f"scratch shard {tally.index}: reading {key!r} failed: {bad}")
        master.failed += 1
    elif named:
        tally.missing += 1  # not in the backup (or expired before this run began)
    else:  # expired between SCAN and DUMP
        tally.expired += 1
        master.skipped_expired += 1


def _finish(run: Run, pipes: list[Pipe], pending: list, recheck: list) -> None:
    """Count the replies of one dispatched batch. A BUSYKEY for a key of a batch MIGRATE failed on may be that
    MIGRATE's own write (it sends every RESTORE even when an earlier reply was an error): such keys go to `recheck`."""
    for index, sent, payloads in pending:
        master = run.masters[index]
        for i, (name, reply) in enumerate(zip(sent, pipes[index].read(len(sent)), strict=True)):
            if not run.write:
                if reply == 1:
                    master.exist_on_target += 1
                    run.shards[-1].exist_on_target += 1
                    if len(run.existing_examples) < 3:
                        run.existing_examples.append(name.decode(errors="replace"))
            elif reply == b"OK":
                master.restored += 1
            elif payloads is not None and str(reply).startswith("BUSYKEY"):
                recheck.append((index, name, payloads[i]))
            else:
                _busy_or_failed(run, master, name, reply)


def _busy_or_failed(run: Run, master: MasterTally, name: bytes, reply) -> None:
    if isinstance(reply, ReplyError) and str(reply).startswith("BUSYKEY") and run.plan.on_conflict == "skip":
        master.skipped_existing += 1
    else:
        master.failed += 1
        why = "created on the target after the check" if str(reply).startswith("BUSYKEY") else reply
        _error(run, f"{master.address}: RESTORE {name.decode(errors='replace')}: {why}")


def _recheck(run: Run, pipes: list[Pipe], scratch: Pipe, recheck: list) -> None:
    """Keys a redone batch found existing: those whose value on the target equals the backup's were written by the
    failed MIGRATE (restored); the others were there already (skipped existing, or failed under fail).

    Equal means: both payloads, RESTOREd on the scratch server under two spare names (no TTL: the digest counts
    one), have the same DEBUG DIGEST-VALUE (the bytes differ with the servers' compression and set order)."""
    by_master: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
    for index, name, payload in recheck:
        by_master[index].append((name, payload))
    spare = b"clusterbak:recheck:" + str(time.time_ns()).encode()
    mine, theirs = spare + b":backup", spare + b":target"
    for index, items in by_master.items():
        pipes[index].send([("DUMP", name) for name, _ in items])
        now = pipes[index].read(len(items))
        cmds = [c for (_, payload), p in zip(items, now, strict=True) if p.__class__ is bytes
                for c in (("RESTORE", mine, 0, payload, "REPLACE"), ("RESTORE", theirs, 0, p, "REPLACE"),
                          ("DEBUG", "DIGEST-VALUE", mine, theirs))]
        scratch.send(cmds + [("DEL", mine, theirs)])
        replies = iter(scratch.read(len(cmds) + 1))
        master = run.masters[index]
        for (name, payload), p in zip(items, now, strict=True):
            same = False
            if p.__class__ is bytes:
                one, two, digests = next(replies), next(replies), next(replies)
                same = p == payload or (one == two == b"OK" and digests.__class__ is list
                                        and digests[0] == digests[1])
            if same:
                master.restored += 1
            else:
                _busy_or_failed(run, master, name, ReplyError("BUSYKEY Target key name already exists."))


def _error(run: Run, message: str) -> None:
    if len(run.errors) < MAX_ERRORS:
        run.errors.append(message)


@contextmanager
def _scratch_root(root: Path | None) -> Iterator[Path]:
    """A private (0700) directory for this run's placed shards and scratch servers; removed at the end, whatever
    happened."""
    base = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=root))
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)
