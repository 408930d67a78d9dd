"""One shard's AOF: pin the settings, BGREWRITEAOF, then the manifest, the base and every incr file."""

from __future__ import annotations

import posixpath
import threading
import time
from contextlib import ExitStack

from clusterbak.engine.cancel import cancel_on_failure
from clusterbak.engine.sinks import HashingSink, VerifyingRdbSink
from clusterbak.errors import StepFailed
from clusterbak.model.address import Address
from clusterbak.model.aofmanifest import AofManifestError, needed, parse_aof_manifest
from clusterbak.model.inventory import Inventory
from clusterbak.model.manifest import SaveTimes, WrittenFile, aof_file_record, aof_folder_record, aof_shard_record
from clusterbak.model.names import NameError_, check_bare_name
from clusterbak.plan.backup import ShardPlan
from clusterbak.redisops.aofrewrite import aof_config, keyspace_counts, pinned_settings, rewrite_and_wait
from clusterbak.redisops.catchup import wait_caught_up
from clusterbak.redisops.connect import ConnectionOptions, make_client, redis_errors
from clusterbak.storage.repository import SetFile, SetWriter
from clusterbak.storage.sink import stored_name
from clusterbak.transports.factory import open_transport, read_text
from clusterbak.transports.pool import TransportPool


def _catch_up(shard: ShardPlan, source, conn: ConnectionOptions, options, cancel: threading.Event) -> None:
    assert shard.source_address is not None  # the plan refuses a shard with no source
    master_address = Address.of(shard.master_address)
    master = make_client(conn, master_address.host, master_address.port)
    try:
        with redis_errors(shard.master_address, conn):
            wait_caught_up(master, source, shard.master_address, shard.source_address,
                           getattr(options, "catch_up_timeout", 30.0), cancel.is_set)
    finally:
        master.close()


def collect_aof(shard: ShardPlan, partial: SetWriter, inventory: Inventory, conn: ConnectionOptions, options,
                host_locks: dict, on_event, cancel: threading.Event | None = None,
                transports: TransportPool | None = None) -> dict:
    assert shard.source_address and shard.source_id, "the plan refuses a shard with no source"
    source = Address.of(shard.source_address)
    client = make_client(conn, source.host, source.port)
    access = inventory.access(shard.source_address)
    # a transport of its own (the caller's pool opens it): shards copy in parallel, each on its own connection
    transport = (transports.fresh(shard.source_address) if transports is not None
                 else open_transport(access, options.accept_new_host_keys))
    try:
        with redis_errors(shard.source_address, conn):
            cfg = aof_config(client)
            with ExitStack() as pinned:  # pinned once this node's turn has come, until its files are copied
                cancel = cancel or threading.Event()
                with host_locks[shard.host], cancel_on_failure(cancel):
                    on_event("bgsave", {"shard": shard.index, "node": shard.source_address})
                    if shard.source_role != "master":  # the copy holds every write acknowledged by now
                        _catch_up(shard, client, conn, options, cancel)
                    saved = pinned.enter_context(pinned_settings(client, shard.source_address, options.relax_fsync))
                    result = rewrite_and_wait(client, shard.source_address, options.timeout, cancel.is_set)
                keys, expires = keyspace_counts(client)
                files = _fetch_all(shard, partial, transport, access.data_dir or cfg["dir"], cfg, options, on_event)
    finally:
        transport.close()
        client.close()
    return aof_shard_record(
        shard.header(),
        rewrite={"duration_s": round(result.duration_s, 3), "finished_at": result.finished_at,
                 "aof_rewrites_before": result.rewrites_before, "aof_rewrites_after": result.rewrites_after,
                 "waited_for_foreign_rewrite": result.waited_for_foreign_rewrite, "settings_pinned": saved},
        save=SaveTimes(result.finished_at - result.duration_s, result.finished_at, result.duration_s),
        keys=keys, expires=expires, aof=files)


def _fetch_all(shard: ShardPlan, partial: SetWriter, transport, data_dir: str, cfg: dict, options, on_event) -> dict:
    if cfg.get("appenddirname"):
        aof_dir = posixpath.join(data_dir, cfg["appenddirname"])
        manifest_name = f"{cfg['appendfilename']}.manifest"
        text = read_text(transport, posixpath.join(aof_dir, manifest_name))
        try:
            files = needed(parse_aof_manifest(text))
        except AofManifestError as exc:
            raise StepFailed(f"{shard.source_address}:{aof_dir}/{manifest_name}: {exc}") from exc
        names = [(f.name, f.type, f.seq) for f in files]
    else:  # before Redis 7.0: one appendonly.aof in dir
        aof_dir, manifest_name, text = data_dir, None, None
        names = [(cfg["appendfilename"], "single", 0)]
    for name in [cfg.get("appenddirname") or "appendonlydir", cfg["appendfilename"]] + [n for n, _, _ in names]:
        try:  # the node's reply names files we create in the set: only bare names (a reply is untrusted)
            check_bare_name(name)
        except NameError_ as exc:
            raise StepFailed(f"{shard.source_address}: the AOF names a file clusterbak will not write: {exc}") from exc
    folder = partial / f"shard-{shard.index:02d}-{str(shard.source_id)[:8]}.aof"
    folder.mkdir(mode=0o700)
    out = []
    for name, kind, seq in names:
        out.append(
            _fetch_one(shard, folder, transport, posixpath.join(aof_dir, name), name, kind, seq, options, on_event)
        )
    return aof_folder_record(cfg.get("appenddirname") or None, cfg["appendfilename"], manifest_name, text,
                             folder.name, out)


def _fetch_one(
    shard, folder: SetFile, transport, source: str, name: str, kind: str, seq: int, options, on_event
) -> dict:
    is_rdb = name.endswith(".rdb")
    holder: dict = {}

    def on_bytes(n: int) -> None:
        on_event("bytes", {"shard": shard.index, "bytes": n})

    def open_sink():
        def target_for(compression: str) -> SetFile:
            return folder / stored_name(name, compression)

        holder["sink"] = (VerifyingRdbSink(target_for, options.compress, f"{shard.source_address}:{source}", on_bytes)
                          if is_rdb else HashingSink(target_for, options.compress, on_bytes))
        on_event("transfer", {"shard": shard.index, "node": shard.source_address, "path": source})
        return holder["sink"]

    t0 = time.monotonic()
    transport.fetch(source, open_sink)
    sink = holder["sink"]
    target = sink.file.target
    stored = sink.stored
    raw_sha256 = sink.report.sha256 if is_rdb else sink.raw_sha256
    file = WrittenFile(f"{folder.name}/{target.name}", source, stored.raw_size, stored.stored_size,
                       stored.sha256_stored, raw_sha256, stored.compression)
    record = aof_file_record(file, name, kind, seq, time.monotonic() - t0,
                             crc64=sink.report.crc64_stored if is_rdb else None,
                             rdb_version=sink.report.rdb_version if is_rdb else None)
    on_event("fetched", {"shard": shard.index, "bytes": record["raw_size"], "seconds": record["transfer_seconds"]})
    return record
