"""Execute a BackupPlan: per shard BGSAVE (one at a time per host) and stream + verify; every nodes.conf;
manifest last. A failure or interrupt discards the .partial set: nothing complete-looking is left."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from functools import partial as partial_fn

from clusterbak import __version__
from clusterbak.engine.aof_backup import collect_aof
from clusterbak.engine.cancel import cancel_on_failure
from clusterbak.engine.node_extras import NodeExtras
from clusterbak.engine.sinks import TextFileSink, VerifyingRdbSink
from clusterbak.errors import AccessRefused, ClusterbakError, ConnectError, RunCancelled, StepFailed
from clusterbak.model.inventory import Inventory
from clusterbak.model.manifest import (
    SaveTimes,
    WrittenFile,
    manifest_record,
    node_record,
    rdb_file_record,
    rdb_shard_record,
)
from clusterbak.model.state import NodeState
from clusterbak.model.topology import Topology
from clusterbak.plan.backup import BackupPlan, BackupRun, NodeFilePlan, ShardPlan, Via
from clusterbak.redisops.bgsave import SaveResult, bgsave_and_wait, server_time
from clusterbak.redisops.catchup import CatchUp, wait_caught_up
from clusterbak.redisops.connect import ConnectionOptions, make_client, redis_errors
from clusterbak.redisops.rdbsync import SnapshotStream
from clusterbak.storage.keys import Signer
from clusterbak.storage.repository import SetWriter, open_repository
from clusterbak.storage.s3options import S3Options
from clusterbak.storage.sink import stored_name
from clusterbak.storage.stages import Encryption
from clusterbak.transports.base import stream_into
from clusterbak.transports.factory import open_transport
from clusterbak.transports.pool import TransportPool

Event = Callable[[str, dict], None]


@dataclass(frozen=True, slots=True)
class BackupOptions:
    dest: str
    parallel: int = 2
    timeout: float = 600.0
    compress: str = "auto"  # auto | zstd | none; auto: per file, raw when its first MiB barely compresses
    accept_new_host_keys: bool = False
    relax_fsync: bool = False
    s3: S3Options | None = None
    encryption: Encryption | None = None  # age recipients every stored file is encrypted to
    signer: Signer | None = None  # signs manifest.json (Ed25519)
    catch_up_timeout: float = 30.0  # seconds a source replica may take to reach its master's offset before BGSAVE
    saves_per_host: int = 1  # BGSAVEs at once on one host (fork memory: 1 unless the host has the headroom)
    via: str = "transport"  # transport: BGSAVE, then fetch the file; sync: the replica streams its snapshot to us

    @classmethod
    def of(cls, run: BackupRun, s3: S3Options | None = None, encryption: Encryption | None = None,
           signer: Signer | None = None) -> BackupOptions:
        """The run's options (what --dry-run printed) with the objects that carry them out."""
        return cls(run.dest, run.parallel, run.timeout, run.compress, run.accept_new_host_keys, run.relax_fsync, s3,
                   encryption, signer, run.catch_up_timeout, run.saves_per_host, run.via)


def run_backup(plan: BackupPlan, seed: str, topology: Topology, states: tuple[NodeState, ...], inventory: Inventory,
               conn: ConnectionOptions, options: BackupOptions, on_event: Event = lambda k, d: None, *,
               transports: TransportPool | None = None) -> dict:
    """`transports`: the ways into the hosts (the caller's pool, which it closes); None: one of its own."""
    if not plan.ok:
        raise StepFailed("refusing to execute a plan with refusals: " + "; ".join(plan.refusals))
    owned = transports is None
    pool = TransportPool(inventory, options.accept_new_host_keys) if transports is None else transports
    try:
        preflight_transports(plan, pool)
        return _run(plan, seed, topology, states, inventory, conn, options, on_event, pool)
    except AccessRefused:
        raise  # the user lacks a right (NOPERM): the fix is its ACL, a refusal (3) even mid-run
    except ConnectError as exc:  # the plan was checked: a node lost now is a failed step (4), not a refusal (3)
        raise StepFailed(str(exc)) from exc
    finally:
        if owned:
            pool.close()


def _run(plan: BackupPlan, seed: str, topology: Topology, states: tuple[NodeState, ...], inventory: Inventory,
         conn: ConnectionOptions, options: BackupOptions, on_event: Event, transports: TransportPool) -> dict:
    store = open_repository(options.dest, options.s3)
    partial = store.begin(plan.backup_id, options.encryption, options.signer)
    started = time.time()
    extras_box: list[NodeExtras] = []  # started with the set's first file (below)
    extras_lock = threading.Lock()

    def start_extras() -> None:
        """Config files, users, modules: independent of the snapshots, so collected while the shards run - but
        only once the first shard file exists: the set directory appears with its first file, so a run killed
        before that (e.g. during an AOF rewrite) leaves nothing behind."""
        with extras_lock:
            if not extras_box:
                extras_box.append(NodeExtras(plan.node_files, partial, transports, conn))

    try:
        # saves at once per host: 1 unless the operator knows the host has the memory (the plan shows what it assumes)
        per_host = max(1, options.saves_per_host)
        host_locks: dict[str, threading.BoundedSemaphore] = defaultdict(lambda: threading.BoundedSemaphore(per_host))
        cancel = threading.Event()

        def guarded(kind: str, data: dict) -> None:
            """Every step and chunk reports here: once the run is cancelled, workers stop at their next one."""
            if cancel.is_set():
                raise RunCancelled("backup cancelled")
            if kind == "transfer":
                start_extras()
            on_event(kind, data)

        slots = max(1, options.parallel)
        if plan.kind == "aof":
            collect, workers = partial_fn(collect_aof, cancel=cancel, transports=transports), slots
        else:  # `parallel` saves and `parallel` transfers: a finished save never waits for a busy transfer
            collect = partial_fn(_shard, save_slots=threading.BoundedSemaphore(slots),
                                 transfer_slots=threading.BoundedSemaphore(slots), cancel=cancel, transports=transports)
            workers = 2 * slots
        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            futures = [pool.submit(collect, s, partial, inventory, conn, options, host_locks, guarded)
                       for s in plan.shards]
            done, _ = wait(futures, return_when="FIRST_EXCEPTION")
            if any(f.exception() is not None for f in done):
                cancel.set()
                wait(futures)  # the others stop at their next poll or chunk; then report the cause, not "cancelled"
                errors = [e for f in futures if (e := f.exception()) is not None]
                raise next((e for e in errors if not isinstance(e, RunCancelled)), errors[0])
            shard_records = [f.result() for f in futures]
        except BaseException:
            cancel.set()  # then wait: a worker puts a node's settings back before it stops
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        shards_done = time.time()
        node_records, warnings = [], list(plan.warnings)
        with ThreadPoolExecutor(max_workers=4) as small:  # tiny files, one round trip each: overlap them
            fetched = [small.submit(_node_file, nf, partial, transports, on_event) for nf in plan.node_files]
        incomplete = []
        for nf, future in zip(plan.node_files, fetched, strict=True):
            try:
                node_records.append(future.result())
            except ClusterbakError as exc:
                if not nf.optional:
                    raise
                incomplete.append(f"{nf.address}: nodes.conf not collected ({exc}): restore cannot bring this node "
                                  "back from this set")
        start_extras()
        warnings += extras_box[0].add_to(node_records)
        created = time.time()
        manifest = manifest_record(
            kind=plan.kind, backup_id=plan.backup_id, created=created, started=started, version=__version__,
            seed=seed, source_mode=plan.source_mode, topology=topology, states=states, shards=shard_records,
            nodes=node_records, timings={"shards_s": shards_done - started, "node_files_s": created - shards_done},
            warnings=warnings + incomplete, incomplete=incomplete)
        final = store.finalize(partial, manifest)
    except BaseException:
        with extras_lock:
            for extras in extras_box:
                extras.close()  # before the discard: nothing may still write into the set
        store.discard(partial)
        raise
    finally:
        with extras_lock:
            for extras in extras_box:
                extras.close()
    on_event("complete", {"path": final, "backup_id": plan.backup_id})
    return manifest


def preflight_transports(plan: BackupPlan, transports: TransportPool) -> None:
    """Reach every host once before any BGSAVE, all hosts at once: a refused host key or a dead host fails before
    work starts, and the connections stay open in the pool for the nodes.conf and config collection."""
    first: dict[tuple, str] = {}  # way in -> the first node reached through it (plan order)
    for nf in plan.node_files:
        if not nf.optional and nf.nodes_conf_path is not None:
            first.setdefault(transports.key_of(nf.address), nf.address)
    if not first:
        return
    with ThreadPoolExecutor(max_workers=min(16, len(first)), thread_name_prefix="preflight") as pool:
        futures = [pool.submit(lambda a: transports.get(a).run("true", timeout=30), a) for a in first.values()]
    for future in futures:  # every host was tried; the first failure in plan order is the one reported
        future.result()


def _shard(shard: ShardPlan, partial: SetWriter, inventory: Inventory, conn: ConnectionOptions, options: BackupOptions,
           host_locks: dict, on_event: Event, save_slots: AbstractContextManager | None = None,
           transfer_slots: AbstractContextManager | None = None, cancel: threading.Event | None = None,
           transports: TransportPool | None = None) -> dict:
    assert shard.source_address and shard.source_id and shard.rdb_path, "the plan refuses a shard with no source"
    host, port = shard.source_address.rsplit(":", 1)
    mhost, mport = shard.master_address.rsplit(":", 1)
    source = make_client(conn, host, int(port))
    master = make_client(conn, mhost, int(mport))
    via_sync = options.via == Via.SYNC.value and shard.source_role != "master"
    base = f"shard-{shard.index:02d}-{shard.source_id[:8]}.rdb"
    holder: dict = {}

    def open_sink() -> VerifyingRdbSink:
        holder["sink"] = VerifyingRdbSink(lambda c: partial / stored_name(base, c), options.compress,
                                          f"{shard.source_address}:{'(sync)' if via_sync else shard.rdb_path}",
                                          lambda n: on_event("bytes", {"shard": shard.index, "bytes": n}))
        on_event("transfer", {"shard": shard.index, "node": shard.source_address,
                              "path": "replication stream" if via_sync else shard.rdb_path})
        return holder["sink"]

    t_queued = time.monotonic()
    try:
        cancel = cancel or threading.Event()
        # the host first: a slot never idles on a busy host; a failure cancels the run *before* the host is let go,
        # so no queued shard starts a BGSAVE that nobody will use
        with host_locks[shard.host], save_slots or nullcontext(), cancel_on_failure(cancel):
            t_slot = time.monotonic()
            on_event("bgsave", {"shard": shard.index, "node": shard.source_address})
            with redis_errors(shard.master_address, conn):
                mrepl = master.info("replication")
            caught = None
            if shard.source_role != "master":  # every write the master acknowledged by now goes into the snapshot
                with redis_errors(shard.source_address, conn):
                    caught = wait_caught_up(master, source, shard.master_address, shard.source_address,
                                            options.catch_up_timeout, cancel.is_set)
            t_caught = time.monotonic()
            if via_sync:  # the node's save is done (and its fork gone) once it announces the length: the host is free
                stream, save, via = _sync_saved(shard, source, conn, options, caught, cancel)
            else:
                with redis_errors(shard.source_address, conn):
                    logfile = _logfile(source)
                    save = bgsave_and_wait(source, shard.source_address, options.timeout, logfile, cancel.is_set)
                via = {"via": Via.TRANSPORT.value}
            t_saved = time.monotonic()
        on_event("saved", {"shard": shard.index, "node": shard.source_address, "seconds": save.duration_s})
    finally:
        source.close()
        master.close()
    t_waiting = time.monotonic()
    if via_sync:  # the saved snapshot waits on its socket for a transfer slot, like a saved file
        try:
            with transfer_slots or nullcontext():
                t0 = t_connected = time.monotonic()
                with redis_errors(shard.source_address, conn):
                    stream_into(stream.chunks(), open_sink)
                seconds = time.monotonic() - t0
        finally:
            stream.close()
    else:
        with transfer_slots or nullcontext():
            t0 = time.monotonic()
            # a transport of its own: transfers run in parallel, each on its own connection
            transport = (transports.fresh(shard.source_address) if transports is not None
                         else open_transport(inventory.access(shard.source_address), options.accept_new_host_keys))
            t_connected = time.monotonic()
            try:
                transport.fetch(shard.rdb_path, open_sink)
            finally:
                transport.close()
            seconds = time.monotonic() - t0
    sink: VerifyingRdbSink = holder["sink"]
    timings = {"wait_host_s": t_slot - t_queued, "catch_up_s": t_caught - t_slot, "bgsave_s": t_saved - t_caught,
               "wait_transfer_s": t0 - t_waiting,
               "connect_s": t_connected - t0, "transfer_s": seconds, **sink.timings}
    report, stored, target = sink.report, sink.stored, sink.file.target
    assert report is not None and stored is not None and target is not None  # set by the sink's close (fetch's)
    ctime = int(dict(report.aux).get("ctime", "0") or 0)
    if ctime and ctime < int(save.requested_at) - 1:
        raise StepFailed(f"{shard.source_address}:{shard.rdb_path} was written at {ctime}, before our BGSAVE "
                         f"({int(save.requested_at)}): dir/dbfilename do not point at the file this node saves")
    on_event("fetched", {"shard": shard.index, "bytes": stored.raw_size, "seconds": seconds})
    aux = dict(report.aux)
    file = WrittenFile(target.name, "(replication stream)" if via_sync else shard.rdb_path, stored.raw_size,
                       stored.stored_size, stored.sha256_stored, report.sha256, stored.compression)
    return rdb_shard_record(
        shard.header(), master_replid=mrepl.get("master_replid"),
        master_repl_offset=int(mrepl.get("master_repl_offset", 0)), source_replid=save.master_replid,
        source_repl_offset=save.repl_offset, save=SaveTimes(save.requested_at, save.finished_at, save.duration_s),
        save_details={"scheduled": save.scheduled, "waited_for_foreign_save": save.waited_for_foreign_save,
                      "rdb_saves_before": save.rdb_saves_before, "rdb_saves_after": save.rdb_saves_after,
                      "caught_up_to": caught.master_offset if caught else None,
                      "catch_up_s": round(caught.waited_s, 3) if caught else None,
                      "rdb_last_cow_size": save.cow_bytes, **via},
        rdb={"version": report.rdb_version, "magic": report.magic, "redis_ver": aux.get("redis-ver"),
             "valkey_ver": aux.get("valkey-ver"), "ctime": ctime, "keys": report.total_keys,
             "expires": sum(d.expires for d in report.dbs), "dbs": [asdict(d) for d in report.dbs],
             "counts_known": report.counts_known},
        file=rdb_file_record(file, report.crc64_stored, report.checksum_disabled),
        transfer_seconds=seconds, timings=timings)


def _sync_saved(shard: ShardPlan, source, conn: ConnectionOptions, options: BackupOptions, caught: CatchUp | None,
                cancel: threading.Event) -> tuple[SnapshotStream, SaveResult, dict]:
    """Ask the replica for its snapshot over the replication protocol and wait until it is saved: the stream comes
    back open at its first byte. Proven ours: the node names the offset it forked at, and it must hold what the
    master had acknowledged when the shard's turn came (a save of someone else's, started earlier, is refused)."""
    assert shard.source_address is not None
    host, port = shard.source_address.rsplit(":", 1)
    stream = SnapshotStream(conn, host, int(port), options.timeout, cancel.is_set)
    try:
        with redis_errors(shard.source_address, conn):
            requested_at = server_time(source)
            snap = stream.open()
            if caught is not None and (snap.replid != caught.replid or snap.offset < caught.master_offset):
                raise StepFailed(
                    f"{shard.source_address}: the snapshot it sent holds its stream up to {snap.replid[:8]}:"
                    f"{snap.offset}, short of the {caught.master_offset} its master had acknowledged (a full sync "
                    "of another replica was already saving); run the backup again")
            finished_at = server_time(source)
            cow = source.info("persistence").get("rdb_last_cow_size")
    except BaseException:
        stream.close()
        raise
    save = SaveResult(shard.source_address, requested_at, finished_at, 0, -1, -1, False, False,
                      finished_at - requested_at, snap.offset, snap.replid, int(cow) if cow is not None else None)
    via = {"via": Via.SYNC.value, "snapshot_offset": snap.offset, "rdb_only": snap.rdb_only,
           "ready_s": round(snap.ready_s, 3),  # PSYNC to the whole snapshot saved, before its first byte came
           "rdb_saves_before": None, "rdb_saves_after": None, "waited_for_foreign_save": None}  # not counted here
    return stream, save, via


def _node_file(nf: NodeFilePlan, partial: SetWriter, transports: TransportPool, on_event: Event) -> dict:
    if nf.nodes_conf_path is None:
        raise StepFailed(f"{nf.address}: where its nodes.conf is is unknown; set data_dir (and cluster_config_file) "
                         "for it in the inventory")
    (partial / "nodes").mkdir(exist_ok=True, mode=0o700)
    target = partial / "nodes" / f"{nf.address.replace(':', '_')}-{nf.node_id[:8]}.conf"
    holder: dict = {}

    def open_sink() -> TextFileSink:
        holder["sink"] = TextFileSink(target, f"{nf.address}:{source}", nf.node_id)
        return holder["sink"]

    transport = transports.get(nf.address)
    candidates = (nf.nodes_conf_path, *nf.alternatives)
    source = next((p for p in candidates if len(candidates) == 1 or transport.stat(p) is not None), None)
    if source is None:
        raise StepFailed(f"{nf.address}: no nodes.conf at {', '.join(candidates)}")
    transport.fetch(source, open_sink)
    stored = holder["sink"].stored
    on_event("nodes_conf", {"node": nf.address})
    return node_record(nf.node_id, nf.address, nf.role, f"nodes/{target.name}", source, stored.stored_size,
                       stored.sha256_stored)


def _logfile(client) -> str:
    try:
        reply = client.execute_command("CONFIG", "GET", "logfile")
        value = reply.get("logfile") if isinstance(reply, dict) else (reply[1] if len(reply) > 1 else "")
        return f"logfile {value}" if value else "logging to stdout/syslog"
    except Exception:  # noqa: BLE001 - only a hint for an error message
        return ""


def incomplete_parts(manifest: dict) -> list[str]:
    """Why the set just written cannot be restored as a whole ([] when it can)."""
    return list(manifest.get("incomplete") or [])

