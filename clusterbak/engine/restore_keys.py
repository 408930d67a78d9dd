"""restore-keys: copy selected keys of a backup set into a live target, shard by shard, through a scratch server.

Per needed shard: load it into a scratch redis-server (as a replica of nothing, so no key is dropped while loading),
promote it for a moment and touch the selection so the keys whose TTL has passed since the backup expire and are
named by keyspace events, demote it (its keyspace is then frozen), then SCAN/DUMP/PEXPIRETIME the selection in
batches and RESTORE ... ABSTTL each key into the target master that owns its slot. A dry run does the same reads
and asks the target EXISTS instead of writing. `--on-conflict fail` runs that dry pass first and writes nothing if
any selected key exists.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from clusterbak.engine.scratch import SCRATCH_PREFIX, ScratchServer
from clusterbak.engine.verify import verify_set
from clusterbak.errors import PreconditionError, VerifyError
from clusterbak.model.manifest import Manifest, ShardRecord
from clusterbak.plan.restore_keys import (
    RestoreKeysPlan,
    Selection,
    glob_match,
    key_slot,
    payload_rdb_version,
    payload_type,
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
    open_pipe,
    restore_command,
    scan,
)
from clusterbak.storage.repository import StoredSet

Event = Callable[[str, dict], None]
NAME_BATCH = 1000
IN_FLIGHT = 2  # batches of RESTOREs a target master may still be working on while the next batch is read
TOUCH_COUNT = 10000  # SCAN COUNT while only touching keys (nothing is read per key)
MAX_ERRORS = 5


@dataclass
class MasterTally:
    address: str
    restored: int = 0
    skipped_existing: int = 0
    skipped_expired: int = 0
    failed: int = 0
    exist_on_target: int = 0
    bytes: int = 0


@dataclass
class ShardTally:
    index: int
    source: str
    selected: int = 0
    expired: int = 0
    missing: int = 0
    exist_on_target: int = 0
    bytes: int = 0
    load_seconds: float = 0.0


@dataclass
class Run:
    plan: RestoreKeysPlan
    write: bool
    masters: list[MasterTally]
    table: list[int]
    shards: list[ShardTally] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    existing_examples: list[str] = field(default_factory=list)

    def master_of(self, name: bytes) -> MasterTally:
        return self.masters[self.table[key_slot(name)]]

    def report(self, seconds: float) -> dict:
        totals = {k: sum(getattr(m, k) for m in self.masters)
                  for k in ("restored", "skipped_existing", "skipped_expired", "failed", "exist_on_target", "bytes")}
        totals["selected"] = sum(s.selected for s in self.shards)
        totals["missing"] = sum(s.missing for s in self.shards)
        return {"backup_id": self.plan.backup_id, "mode": "write" if self.write else "dry-run",
                "shards": [asdict(s) for s in self.shards], "masters": [asdict(m) for m in self.masters],
                "totals": totals, "errors": self.errors, "seconds": round(seconds, 3),
                "keys_per_second": round(totals["selected"] / seconds) if seconds else None}


def verify_needed(set_dir: StoredSet, manifest: Manifest, plan: RestoreKeysPlan) -> None:
    """The stored files of the shards to read match the manifest (sha256, RDB CRC64); nothing else is read."""
    wanted = {s.index for s in plan.shards}
    sub = replace(manifest, shards=tuple(s for s in manifest.shards if s.index in wanted), node_confs=())
    bad = [f"{r['file']}: {r['problem']}" for r in verify_set(set_dir, sub) if not r["ok"]]
    if bad:
        raise VerifyError(f"backup {plan.backup_id} is damaged, nothing was written: {bad[0]}"
                          + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))


def run_restore_keys(
    plan: RestoreKeysPlan,
    set_dir: StoredSet,
    manifest: Manifest,
    target: ConnectionOptions,
    write: bool,
    scratch_root: Path | None = None,
    on_event: Event = lambda k, d: None,
    parallel: int = 1,
) -> dict:
    """Dry run (write=False) or real run. Scratch servers live under scratch_root and are gone when this returns."""
    if not plan.ok:
        raise PreconditionError("refusing a plan with refusals: " + "; ".join(plan.refusals))
    t0 = time.monotonic()
    with _scratch_root(scratch_root) as root:  # SIGTERM unwinds like Ctrl-C (cli/entry.py)
        if write and plan.on_conflict == "fail":
            check = _pass(plan, set_dir, manifest, target, False, root, on_event, parallel)
            existing = sum(m.exist_on_target for m in check.masters)
            if existing:
                raise PreconditionError(
                    f"{existing} selected keys already exist on the target (for example "
                    f"{', '.join(check.existing_examples)}); nothing was written (--on-conflict fail)")
            on_event("checked", {"existing": 0})
        run = _pass(plan, set_dir, manifest, target, write, root, on_event, parallel)
    return run.report(time.monotonic() - t0)


def _pass(
    plan: RestoreKeysPlan,
    set_dir: StoredSet,
    manifest: Manifest,
    target: ConnectionOptions,
    write: bool,
    root: Path,
    on_event: Event,
    parallel: int,
) -> Run:
    """Every shard of the plan, `parallel` at a time (each its own scratch server and target connections).
    On an error or an interrupt the other shards stop at their next batch; their sockets are shut so a blocked
    read returns at once, and each job removes its scratch server on the way out."""
    run = _new_run(plan, write)
    by_index = {s.index: s for s in manifest.shards}
    jobs = [_ShardJob(plan, write, set_dir, by_index[s.index], s.source, target, root, on_event) for s in plan.shards]
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


def _new_run(plan: RestoreKeysPlan, write: bool) -> Run:
    return Run(plan, write, [MasterTally(m.address) for m in plan.masters],
               slot_owner_table([(m.address, m.slots) for m in plan.masters]))


def _merge(into: Run, part: Run) -> None:
    for total, one in zip(into.masters, part.masters, strict=True):
        for name in ("restored", "skipped_existing", "skipped_expired", "failed", "exist_on_target", "bytes"):
            setattr(total, name, getattr(total, name) + getattr(one, name))
    into.shards.extend(part.shards)
    into.errors.extend(part.errors[:MAX_ERRORS - len(into.errors)])
    into.existing_examples.extend(part.existing_examples[:3 - len(into.existing_examples)])


class _ShardJob:
    def __init__(self, plan, write, set_dir, shard, source, target, root, on_event) -> None:
        self.plan, self.write, self.set_dir, self.shard, self.source = plan, write, set_dir, shard, source
        self.target, self.root, self.on_event = target, root, on_event
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
        run = _new_run(self.plan, self.write)
        tally = ShardTally(self.shard.index, self.source)
        run.shards.append(tally)
        try:
            if self.cancelled.is_set():
                raise KeyboardInterrupt
            self.on_event("loading", {"shard": tally.index})
            t = time.monotonic()
            targets = [self._open(lambda m=m: open_pipe(self.target, m.address)) for m in self.plan.masters]
            with ScratchServer(self.root, self.set_dir, self.shard) as scratch:
                tally.load_seconds = round(time.monotonic() - t, 3)
                self.on_event("loaded", {"shard": tally.index, "seconds": tally.load_seconds})
                _copy_shard(run, tally, scratch, self.shard, targets, self)
            self.on_event("shard", asdict(tally))
            return run
        finally:
            with self.lock:
                for p in self.pipes:
                    p.close()


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
        scanner = job._open(scratch.pipe)
        pending: deque = deque()  # batches sent to the target whose replies are not read yet
        read: tuple[list[bytes], list, bool] | None = None  # the batch DUMPed last, not yet sent on
        # three stages at once: the scratch server DUMPs batch k while this thread routes batch k-1 and the target
        # masters RESTORE batches k-2 and k-3
        for keys, named in _batches(scanner, sel, shard_slots):
            if job.cancelled.is_set():
                raise KeyboardInterrupt
            reader.send_packed(dump_commands(keys, expire_cmd.encode()))
            if read is not None:
                pending.append(_dispatch(run, tally, pipes, *read, expire_cmd))
            while len(pending) > IN_FLIGHT:
                _finish(run, pipes, pending.popleft())
            read = (keys, reader.read(2 * len(keys)), named)
        if read is not None:
            pending.append(_dispatch(run, tally, pipes, *read, expire_cmd))
        while pending:
            _finish(run, pipes, pending.popleft())
    finally:
        reader.close()
        events.close()


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
              expire_cmd: str) -> list:
    """Turn one batch of DUMP/expire replies into RESTORE (or EXISTS for a dry run) per target master; send them.
    Returns what _finish needs to read the answers."""
    plan, sel = run.plan, run.plan.selection
    now_ms = int(time.time() * 1000)
    absolute_expiry = expire_cmd == "PEXPIRETIME"
    keep_ttl, replace, prefix, table, write = plan.ttl == "keep", plan.on_conflict == "replace", plan.rename_prefix, \
        run.table, run.write
    top = plan.payload_version or 0xFFFF
    per_master: dict[int, list[bytes]] = defaultdict(list)
    names: dict[int, list[bytes]] = defaultdict(list)
    sizes: dict[int, int] = defaultdict(int)
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
        sizes[index] += len(payload)
    for index, cmds in per_master.items():
        pipes[index].send_packed(b"".join(cmds))
        run.masters[index].bytes += sizes[index]
        tally.bytes += sizes[index]
        tally.selected += len(cmds)
    return [(index, names[index]) for index in per_master]


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


def _finish(run: Run, pipes: list[Pipe], pending: list) -> None:
    for index, sent in pending:
        master = run.masters[index]
        for name, reply in zip(sent, pipes[index].read(len(sent)), strict=False):
            if not run.write:
                if reply == 1:
                    master.exist_on_target += 1
                    run.shards[-1].exist_on_target += 1
                    if len(run.existing_examples) < 3:
                        run.existing_examples.append(name.decode(errors="replace"))
            elif reply == b"OK":
                master.restored += 1
            elif isinstance(reply, ReplyError) and str(reply).startswith("BUSYKEY") \
                    and run.plan.on_conflict == "skip":
                master.skipped_existing += 1
            else:
                master.failed += 1
                why = "created on the target after the check" if str(reply).startswith("BUSYKEY") else reply
                _error(run, f"{master.address}: RESTORE {name.decode(errors='replace')}: {why}")


def _error(run: Run, message: str) -> None:
    if len(run.errors) < MAX_ERRORS:
        run.errors.append(message)


@contextmanager
def _scratch_root(root: Path | None) -> Iterator[Path]:
    """A private (0700) directory for this run's scratch servers; removed at the end, whatever happened."""
    import shutil

    base = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=root))
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)
