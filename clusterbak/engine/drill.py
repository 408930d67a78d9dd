"""A disaster-recovery drill: a throwaway lab of the backup's shape, the set restored into it, proven, timed."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from clusterbak.config import load_inventory
from clusterbak.engine.node_extras import drill_users
from clusterbak.engine.restore import run_restore
from clusterbak.engine.restore_prepare import prepare_restore
from clusterbak.errors import PreconditionError, UsageError, VerifyError
from clusterbak.model.manifest import Manifest, TopologyNode
from clusterbak.model.nodesconf import parse_new_address
from clusterbak.plan.node_extras import module_checks
from clusterbak.redisops.connect import ConnectionOptions
from clusterbak.redisops.readiness import ReadinessWatch
from clusterbak.redisops.sample import sample_keys
from clusterbak.storage.reader import verified_chunks
from clusterbak.storage.repository import StoredSet, require_identities


class ScratchCluster(Protocol):
    """A throwaway cluster's nodes, not formed, with an inventory file; remove() stops what was started."""

    @property
    def seed(self) -> str: ...

    @property
    def inventory(self) -> str: ...

    @property
    def addresses(self) -> tuple[str, ...]: ...  # masters first, then replicas

    def remove(self) -> None: ...


# (directory, masters, replicas per master, first port or None for free ports) -> a started scratch cluster
ScratchFactory = Callable[[Path, int, int, int | None], ScratchCluster]


def drill_order(manifest: Manifest) -> list[TopologyNode]:
    """Backup nodes in lab port order: every shard's master first, then replicas by shard."""
    shard = manifest.shard_of()
    nodes = [n for n in manifest.nodes if shard.get(n.id, -1) >= 0]
    return sorted(nodes, key=lambda n: (n.role != "master", shard[n.id], n.address))


def drill_dir(lab_dir: Path | None, backup_id: str) -> Path:
    """The directory the drill owns (and removes afterwards): a new temp dir, or --lab-dir if new or empty."""
    if lab_dir is None:
        return Path(tempfile.mkdtemp(prefix=f"clusterbak-drill-{backup_id}-"))
    lab_dir = lab_dir.absolute()
    if lab_dir.exists() and (not lab_dir.is_dir() or any(lab_dir.iterdir())):
        raise UsageError(f"--lab-dir {lab_dir} exists and is not an empty directory; the drill removes its lab dir "
                         "afterwards, so give it a new path")
    lab_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return lab_dir


def run_drill(set_dir: StoredSet, manifest: Manifest, lab_dir: Path | None, keep: bool, scratch: ScratchFactory,
              on_event=lambda k, d: None, base_port: int | None = None, prove_user: str | None = None,
              prove_password: str | None = None) -> dict:
    """`scratch` starts the throwaway cluster (lab/scratch_cluster.py's lab_scratch_cluster for the CLI). Nothing
    is left behind unless `keep`: its processes are stopped and its directory (with a copy of every dump) is
    removed, also when the drill fails or is interrupted."""
    t0 = time.monotonic()
    refusals, _ = module_checks(manifest, {"the drill lab": ()})  # a lab loads no module: refuse before starting it
    if refusals:
        raise PreconditionError(refusals[0])
    where = drill_dir(lab_dir, manifest.backup_id)
    lab: ScratchCluster | None = None
    report: dict = {"lab": {"dir": str(where), "seed": None, "inventory": None, "kept": keep, "removed": False}}
    marks: dict[str, float] = {}
    watch: ReadinessWatch | None = None
    linked: dict[str, str] = {}  # a node's dump -> the verified copy it is a hard link of (engine/placed_once.py)

    def note(kind: str, data: dict) -> None:
        nonlocal watch
        if kind == "step":
            marks[data["step"]] = time.monotonic()
            if data["step"] == "place" and lab is not None:  # from here, watch the nodes load and turn ok
                watch = ReadinessWatch(ConnectionOptions(seed=lab.seed), list(lab.addresses))
                watch.start()
        elif kind == "serving":
            marks["serving"] = time.monotonic()
        elif kind == "copies":
            linked.update(data["linked"])
        on_event(kind, data)

    try:
        # verify while placing: a drill's lab is throwaway, so unlike a restore into a real cluster (which must
        # refuse a damaged set before stopping anything) it needs no separate pass; every dump, AOF file, nodes.conf
        # and ACL file is hashed as it streams to the lab (storage/reader.VerifiedReader) and a mismatch fails the
        # drill. Only the small files placement may not read are checked here: config and ACL files.
        require_identities(set_dir, manifest)
        _verify_unplaced(set_dir, manifest)
        order = drill_order(manifest)
        masters = len(manifest.shards)
        shard = manifest.shard_of()
        replicas = max(Counter(shard[n.id] for n in order if n.role != "master").values(), default=0)
        lab = scratch(where, masters, replicas, base_port)
        marks["lab"] = time.monotonic()
        report["lab"].update(seed=lab.seed, inventory=lab.inventory)
        on_event("lab", {"seed": lab.seed})
        inventory = load_inventory(lab.inventory)
        mapping = {n.address: parse_new_address(lab.addresses[i]) for i, n in enumerate(order)}
        prepared = prepare_restore(set_dir, manifest, inventory, mapping, lambda seed: ConnectionOptions(seed=seed),
                                   force=True, verify=False)  # verified while placing, below
        plan, conn = prepared.plan, prepared.conn
        on_event("plan", {"sizes": restore_sizes(plan, manifest)})
        try:
            checks = run_restore(plan, set_dir, manifest, inventory, conn, verified=True, on_event=note,
                                 start_when_placed=True)  # the lab is throwaway: each node loads once placed
        except VerifyError as exc:
            raise VerifyError(f"backup {manifest.backup_id} is damaged, the drill failed: {_file_problem(exc)}; "
                              "the drill lab is removed") from exc
        finally:
            if watch is not None:
                watch.stop()
        checks += drill_users(conn, set_dir, manifest, {n.node_id: n.new_address for n in plan.nodes}, prove_user,
                              prove_password)
        proven = time.monotonic()
        samples = sample_keys(lab.seed) if all(c["ok"] for c in checks) else {}
        raw = manifest.raw_bytes
        rto = proven - t0
        report.update(
            ok=all(c["ok"] for c in checks) and all(v["ok"] for v in samples.values()),
            checks=checks, samples=samples, rto_seconds=round(rto, 3),
            rto_phases=rto_phases(t0, marks, watch, proven),
            rpo_seconds=round(time.time() - min(s.requested_at for s in manifest.shards), 1),
            backup_id=manifest.backup_id, raw_bytes=raw, stored_bytes=manifest.stored_bytes,
            keys=manifest.keys, restore_rate_mb_s=round(raw / rto / 1e6, 1) if rto else None,
            mapping={old: new.address for old, new in mapping.items()},
            placed={"written": len(plan.nodes) - len(linked), "linked": len(linked)})
    finally:
        if not keep:
            if lab is not None:
                lab.remove()
            shutil.rmtree(where, ignore_errors=True)
            report["lab"]["removed"] = not where.exists()
    return report


def restore_sizes(plan, manifest: Manifest) -> dict[str, int]:
    """Bytes each target node receives (its nodes.conf and its shard's dump or AOF files), for progress and ETA."""
    out = {}
    for n in plan.nodes:
        files = list(manifest.shard(n.shard).files)
        conf = manifest.conf_of(n.node_id)
        files += [conf.file] if conf is not None else []
        out[n.new_address] = sum(f.raw_size if f.raw_size is not None else f.stored_size for f in files)
    return out




def _verify_unplaced(set_dir: StoredSet, manifest: Manifest) -> None:
    """The small stored files a drill's placement may not stream through VerifiedReader: each node's config file
    and ACL file (the lab places no config; the ACL only where the node has an aclfile)."""
    for conf in manifest.node_confs:
        for record in conf.secret_files:
            for _ in verified_chunks(set_dir, record, "does not match the manifest", ""):
                pass


def _file_problem(exc: BaseException) -> str:
    """The innermost VerifyError's words (the file and what differs), without what a restore adds around it."""
    while isinstance(exc.__cause__, VerifyError):
        exc = exc.__cause__
    return str(exc).replace("changed after it was verified", "does not match the manifest")


def rto_phases(t0: float, marks: dict[str, float], watch: ReadinessWatch | None, proven: float) -> dict:
    """The RTO in consecutive parts (seconds), from the drill's step marks and the readiness watch:
    lab (start the scratch cluster, plan), stop (its empty nodes), place_verify_and_load (each node's files
    placed and verified, the node started and loaded as soon as its own files are there; until every node answers
    without LOADING), redis_master_ready_wait (until every node says cluster_state ok: Redis's own delay before a
    restarted master turns writable, 2 s), replicas_synced (until every replica's link is up), checks (slots,
    roles, key counts, ACL users)."""
    points = [("lab", t0, marks.get("stop")), ("stop", marks.get("stop"), marks.get("place"))]
    loaded = watch.all_(watch.loaded) if watch else None
    ok = watch.all_(watch.cluster_ok) if watch else None
    serving = marks.get("serving")
    if loaded is not None and ok is not None and serving is not None:
        ok = min(ok, serving)
        points += [("place_verify_and_load", marks.get("place"), loaded), ("redis_master_ready_wait", loaded, ok),
                   ("replicas_synced", ok, serving)]
    else:
        points += [("place_until_serving", marks.get("place"), serving)]
    points += [("checks", serving, proven)]
    return {name: round(b - a, 3) for name, a, b in points if a is not None and b is not None}
