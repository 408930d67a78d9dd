"""backup, list, show, verify, prune."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from clusterbak.cli import common as c
from clusterbak.cli import repo_opts as ro
from clusterbak.cli.render import BackupProgress, Outcome, Renderer
from clusterbak.config import load_config, load_inventory
from clusterbak.engine.backup import BackupOptions, incomplete_parts, run_backup
from clusterbak.engine.backup_prepare import PreparedBackup, check_backup_flags, prepare_backup
from clusterbak.engine.prune import prepare_prune, run_prune
from clusterbak.engine.records import record_verification
from clusterbak.engine.runs import cluster_topology, locked_run
from clusterbak.engine.unpin import pinned, put_back_pins
from clusterbak.engine.verify import verify_set
from clusterbak.errors import EXIT_PRECONDITION, EXIT_STEP_FAILED, PreconditionError
from clusterbak.model.inventory import Inventory
from clusterbak.model.retention import merge
from clusterbak.plan.backup import BackupRun, Compress, Source, Via
from clusterbak.redisops.connect import ConnectionOptions
from clusterbak.storage.destination import check_existing_destination, check_writable_destination
from clusterbak.storage.repository import Repository
from clusterbak.transports.pool import TransportPool

Dest = Annotated[str, typer.Option("--dest", help="Where backup sets live: a directory or s3://bucket/prefix.",
                                   envvar="CLUSTERBAK_DEST")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the plan and stop.")]
BreakLock = Annotated[bool, typer.Option("--break-lock", help="Break a STALE run lock (a holder with no heartbeat).")]


def resolve_id(store: Repository, backup_id: str) -> str:
    """`latest` names the newest complete set (for cron and timers, which cannot know the id)."""
    if backup_id != "latest":
        return backup_id
    complete = [e for e in store.entries() if e.status == "complete"]
    if not complete:
        raise PreconditionError(f"no complete backup set in {store.url}, so `latest` names nothing")
    return complete[-1].backup_id


def register(app: typer.Typer) -> None:
    app.command()(backup)
    app.command("list")(list_sets)
    app.command()(show)
    app.command()(verify)
    app.command()(prune)
    app.command()(unpin)


def backup(seed: c.Seed, inventory: c.InventoryFile, dest: Dest,
           parallel: Annotated[int, typer.Option("--parallel", min=1,
                                                 help="Shards in flight at once (BGSAVEs stay one per host).")] = 2,
           source: Annotated[Source, typer.Option("--source", help="replica | master | auto")] = Source.REPLICA,
           max_lag: Annotated[int, typer.Option("--max-lag",
                                                help="Bytes a source replica may trail its master.")] = 1024 * 1024,
           timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for each BGSAVE.")] = 600.0,
           catch_up_timeout: Annotated[float, typer.Option(
               "--catch-up-timeout", min=0,
               help="Seconds a source replica may take to apply its master's writes before its BGSAVE.")] = 30.0,
           compress: Annotated[Compress, typer.Option(
               "--compress", help="auto (per file: raw when its first MiB barely compresses, else zstd) | zstd | none"
           )] = Compress.AUTO,
           force: Annotated[bool, typer.Option("--force", help="Back up even if the cluster is not ok.")] = False,
           accept_new_host_keys: c.AcceptNewHostKeys = False,
           aof: Annotated[bool, typer.Option(
               "--aof", help="Back up each shard's AOF (BGREWRITEAOF) instead of an RDB.")] = False,
           relax_fsync: Annotated[bool, typer.Option(
               "--relax-fsync", help="With --aof: appendfsync no during the copy (put back after).")] = False,
           saves_per_host: Annotated[int, typer.Option(
               "--saves-per-host", min=1,
               help="BGSAVEs at once on one host (default 1: fork memory). The plan shows the memory it assumes.")] = 1,
           via: Annotated[Via, typer.Option(
               "--via", help="transport: BGSAVE, then fetch dump.rdb over SSH/Docker/local | sync: each replica "
               "streams a snapshot it forks for us over the replication protocol (no SSH for the data)")
           ] = Via.TRANSPORT,
           timings: Annotated[bool, typer.Option(
               "--timings", help="Also show where each shard's time went (always in --json).")] = False,
           dry_run: DryRun = False, break_lock: BreakLock = False, user: c.User = None, tls: c.Tls = False,
           cacert: c.CaCert = None, cert: c.Cert = None, key: c.Key = None, tls_insecure: c.TlsInsecure = False,
           connect_timeout: c.ConnectTimeout = 3.0, quiet: c.Quiet = False, metrics_file: c.MetricsFile = None,
           s3_endpoint_url: ro.Endpoint = None, s3_path_style: ro.PathStyle = False, s3_part_size_mb: ro.PartMb = 5,
           s3_concurrency: ro.Concurrency = 2, encrypt_to: ro.EncryptTo = None, sign_key: ro.SignKey = None,
           lock_days: ro.LockDays = 0, lock_mode: ro.LockMode = "governance", json_out: c.Json = False) -> None:
    """Snapshot every shard on an in-sync replica, collect dump.rdb and every nodes.conf, verify, write a set."""

    def body(r: Renderer) -> Outcome:
        check_backup_flags(aof, relax_fsync, via.value)  # a usage error (2) before any connection
        inv = load_inventory(inventory)
        opts = c.connection(seed, user, tls, cacert, cert, key, connect_timeout, inv, tls_insecure)
        enc, signer = ro.encryption(encrypt_to), ro.load_signer(sign_key)
        if not ro.is_remote(dest):
            check_writable_destination(dest)  # before any BGSAVE
        # a missing bucket or refused credentials: exit 3 before any BGSAVE (an S3 repository is opened and checked
        # while the cluster is read, and waited for before the plan is shown)
        repo = ro.repository_soon(dest, s3_endpoint_url, s3_path_style, s3_part_size_mb, s3_concurrency,
                                  writing=True, lock_days=lock_days, lock_mode=lock_mode)
        run = BackupRun(dest, parallel, timeout, compress.value, catch_up_timeout, relax_fsync, saves_per_host,
                        accept_new_host_keys, enc.recipients if enc else (), signer is not None, force, via.value)
        if dry_run:
            prepared = prepare_backup(opts, inv, run, source=source.value, max_lag=max_lag, aof=aof)
            return planned(r, prepared, inv, opts, repo(), enc, signer)
        with locked_run(opts, None, "backup", break_lock) as lock:
            for holder in lock.broken:
                r.note(f"broke a stale run lock: {holder.describe()}")
            prepared = prepare_backup(opts, inv, run, source=source.value, max_lag=max_lag, aof=aof)
            return planned(r, prepared, inv, opts, repo(), enc, signer)

    def planned(r: Renderer, prepared: PreparedBackup, inv: Inventory, opts: ConnectionOptions, repo, enc,
                signer) -> Outcome:
        plan, data = prepared.plan, {"dry_run": dry_run, **prepared.to_dict()}
        r.backup_plan(data["plan"], list(prepared.gate), data["run"])
        if prepared.refusals:
            return Outcome(data=data, exit_code=EXIT_PRECONDITION, errors=list(prepared.refusals))
        if dry_run:
            return Outcome(data=data)
        options = BackupOptions.of(prepared.run, getattr(repo, "options", None), enc, signer)
        with TransportPool(inv, accept_new_host_keys) as transports, \
                BackupProgress(r, list(data["plan"]["shards"])) as progress:
            manifest = run_backup(plan, seed, prepared.seen.topology, prepared.seen.states, inv, opts, options,
                                  progress, transports=transports)
        data.update(path=f"{repo.url}/{plan.backup_id}", manifest=manifest)
        r.backup_summary(manifest)
        if timings:
            r.backup_timings(manifest)
        missing = incomplete_parts(manifest)
        if missing:
            problems = [f"set {plan.backup_id} is INCOMPLETE (kept; `list` marks it, prune never keeps it): {why}"
                        for why in missing]
            for line in problems:
                r.error(line)
            return Outcome(data=data, exit_code=EXIT_STEP_FAILED, errors=problems)
        r.backup_verdict(manifest, data["path"])
        r.secret_files(manifest)
        return Outcome(data=data)

    c.execute("backup", json_out, body, quiet, metrics_file)


def list_sets(dest: Dest, s3_endpoint_url: ro.Endpoint = None, s3_path_style: ro.PathStyle = False,
              json_out: c.Json = False) -> None:
    """Backup sets in DEST: id, age, shards, size, status."""

    def body(r: Renderer) -> Outcome:
        now = time.time()
        if not ro.is_remote(dest):
            check_existing_destination(dest)
        rows = []
        for e in ro.repository(dest, s3_endpoint_url, s3_path_style).entries():
            verified = {"ok": True, "failed": False}.get(e.verified) if e.status in ("complete", "incomplete") else None
            rows.append({"backup_id": e.backup_id, "status": e.status, "problem": e.problem, "kind": e.kind,
                         "shards": e.shards, "size": e.size, "created_at_unix": e.created_at,
                         "age_s": round(now - e.created_at),
                         "verified": verified})
        r.sets(rows)
        return Outcome(data={"dest": dest, "sets": rows})

    c.execute("list", json_out, body)


def show(backup_id: Annotated[str, typer.Argument(help="A set's id, or `latest`.")], dest: Dest,
         s3_endpoint_url: ro.Endpoint = None, s3_path_style: ro.PathStyle = False,
         timings: Annotated[bool, typer.Option("--timings", help="Also show where each shard's time went.")] = False,
         json_out: c.Json = False) -> None:
    """A set's manifest: shards, sources, replication offsets, keys, and every file with its size and checksum."""

    def body(r: Renderer) -> Outcome:
        store = ro.repository(dest, s3_endpoint_url, s3_path_style)
        manifest = store.manifest(resolve_id(store, backup_id))  # validated; the document is shown as stored
        r.backup_summary(dict(manifest.raw))
        if timings:
            r.backup_timings(dict(manifest.raw))
        r.backup_files(dict(manifest.raw))
        r.secret_files(dict(manifest.raw))
        return Outcome(data=dict(manifest.raw))

    c.execute("show", json_out, body)


def verify(backup_id: Annotated[str, typer.Argument(help="A set's id, or `latest`.")], dest: Dest,
           quiet: c.Quiet = False, metrics_file: c.MetricsFile = None,
           s3_endpoint_url: ro.Endpoint = None, s3_path_style: ro.PathStyle = False, identity: ro.Identity = None,
           verify_key: ro.VerifyKey = None, json_out: c.Json = False) -> None:
    """Re-read every file: sha256, decompression, RDB structure and CRC64. Exit 4 naming any bad file.
    An encrypted set without --identity: the stored bytes are checked, the content is not decrypted (said so).
    The result is recorded beside the manifest (verify.json, local or S3), which `check --dest` and prune read."""

    def body(r: Renderer) -> Outcome:
        store = ro.repository(dest, s3_endpoint_url, s3_path_style)
        t0 = time.time()
        bid = resolve_id(store, backup_id)
        manifest, stored = ro.opened(store, bid, verify_key, identity)
        results = verify_set(stored, manifest)
        bad = [f"{x['file']}: {x['problem']}" for x in results if not x["ok"]]
        record = record_verification(stored, bad)
        r.table(f"verify {bid}", ("file", "result"),
                [(x["file"], x.get("note") or "ok" if x["ok"] else x["problem"]) for x in results])
        for line in bad:
            r.error(line)
        r.verdict_line(f"verify {bid}: {'ok' if not bad else 'FAILED'}, {len(results)} files, "
                       f"{len(bad)} bad, took {time.time() - t0:.1f}s, recorded in {record}")
        undecrypted = any("not decrypted" in (x.get("note") or "") for x in results)
        if undecrypted and not bad:
            r.note("stored bytes verified; the content was NOT decrypted (give --identity for the full check)")
        return Outcome(data={"backup_id": bid, "files": results, "ok": not bad, "decrypted": not undecrypted},
                       exit_code=EXIT_STEP_FAILED if bad else 0, errors=bad)

    c.execute("verify", json_out, body, quiet, metrics_file)


def prune(dest: Dest,
          keep_last: Annotated[int | None, typer.Option("--keep-last", min=1,
                                                        help="Keep the N newest complete sets.")] = None,
          keep_daily: Annotated[int | None, typer.Option(
              "--keep-daily", min=0, help="Also keep the newest set of each of the last N days.")] = None,
          keep_weekly: Annotated[int | None, typer.Option(
              "--keep-weekly", min=0, help="Also keep the newest set of each of the last N ISO weeks.")] = None,
          partial_grace_hours: Annotated[float | None, typer.Option(
              "--partial-grace-hours",
              help="Partial/damaged sets younger than this are kept (a backup may be running). Default 24.")] = None,
          config: Annotated[str | None, typer.Option(
              "--config", envvar="CLUSTERBAK_CONFIG",
              help="clusterbak.toml whose [retention] table holds the policy; flags override it.")] = None,
          dry_run: DryRun = False,
          yes: Annotated[bool, typer.Option("--yes", help="Do not ask before deleting.")] = False,
          quiet: c.Quiet = False, metrics_file: c.MetricsFile = None, s3_endpoint_url: ro.Endpoint = None,
          s3_path_style: ro.PathStyle = False, json_out: c.Json = False) -> None:
    """Delete backup sets outside the retention policy, saying which rule kept or dropped each set;
    the newest complete set is never deleted."""

    def body(r: Renderer) -> Outcome:
        c.refuse_together(dry_run=dry_run, yes=yes)
        flags = {"keep_last": keep_last, "keep_daily": keep_daily, "keep_weekly": keep_weekly,
                 "partial_grace_hours": partial_grace_hours}
        policy = merge(*load_config(config), flags)
        if not ro.is_remote(dest):
            check_existing_destination(dest)
        store = ro.repository(dest, s3_endpoint_url, s3_path_style)
        prepared = prepare_prune(store, policy)
        decisions = prepared.decisions
        shown = {"newest": "newest", "none": "no rule"}
        rows = [{"backup_id": d.backup_id, "action": d.action, "rule": d.rule, "reason": d.reason,
                 "rule_from": policy.where(d.rule)} for d in decisions]
        r.line("policy: " + ", ".join(f"{rule} {getattr(policy, rule):g} ({policy.where(rule)})"
                                      for rule in ("keep_last", "keep_daily", "keep_weekly", "partial_grace_hours")),
               markup=False)
        r.table("prune plan", ("set", "action", "rule", "why"),
                [(d.backup_id, d.action, shown.get(d.rule, d.rule), d.reason) for d in decisions],
                [None if d.action == "keep" else "yellow" for d in decisions])
        doomed = prepared.doomed
        policy_data = {rule: getattr(policy, rule) for rule in ("keep_last", "keep_daily", "keep_weekly",
                                                                 "partial_grace_hours")}
        if dry_run or not doomed:
            r.verdict_line(f"prune {store.url}: {'dry run, would delete' if dry_run else 'deleted'} "
                           f"{len(doomed) if dry_run else 0}, kept {len(decisions) - len(doomed)}")
            return Outcome(data={"dry_run": dry_run, "policy": policy_data, "decisions": rows, "deleted": []})
        if not yes and not r.confirm(f"delete {len(doomed)} backup set(s) from {store.url}?"):
            raise PreconditionError("not confirmed; nothing deleted (use --yes to skip the question)")
        deleted = run_prune(store, prepared)
        r.verdict_line(f"prune {store.url}: deleted {len(doomed)}, kept {len(decisions) - len(doomed)}")
        return Outcome(data={"dry_run": False, "policy": policy_data, "decisions": rows, "deleted": deleted})

    c.execute("prune", json_out, body, quiet, metrics_file)


def unpin(seed: c.Seed, dry_run: DryRun = False,
          yes: Annotated[bool, typer.Option("--yes", help="Do not ask before setting the originals.")] = False,
          user: c.User = None, tls: c.Tls = False, cacert: c.CaCert = None, cert: c.Cert = None, key: c.Key = None,
          connect_timeout: c.ConnectTimeout = 3.0, json_out: c.Json = False) -> None:
    """Put back the settings an interrupted AOF backup left pinned, from the pin records on this control host."""

    def body(r: Renderer) -> Outcome:
        opts = c.connection(seed, user, tls, cacert, cert, key, connect_timeout)
        topology = cluster_topology(opts)
        if dry_run:
            return undo(r, opts, topology)
        with locked_run(opts, topology, "unpin"):  # never under a running backup's feet
            return undo(r, opts, topology)

    def undo(r: Renderer, opts, topology) -> Outcome:
        records = pinned(topology)
        rows: list[dict[str, Any]] = [{"node": rec.address, "originals": rec.originals, "pinned_by": rec.describe()}
                                      for rec in records]
        r.table("pinned settings to put back", ("node", "originals", "pinned by"),
                [(x["node"], ", ".join(f"{k} {v}" for k, v in x["originals"].items()), x["pinned_by"]) for x in rows])
        if dry_run or not records:
            return Outcome(data={"dry_run": dry_run, "nodes": rows, "restored": []})
        if not yes and not r.confirm(f"set the original settings again on {len(records)} node(s)?"):
            raise PreconditionError("not confirmed; nothing changed (use --yes to skip the question)")
        restored, errors = put_back_pins(opts, records)
        for line in errors:
            r.error(line)
        return Outcome(data={"dry_run": False, "nodes": rows, "restored": restored},
                       exit_code=EXIT_STEP_FAILED if errors else 0, errors=errors)

    c.execute("unpin", json_out, body)
