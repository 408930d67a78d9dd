"""Execute a RestorePlan: verify, stop all, move aside, place atomically, start all, prove.

Nothing is deleted: what was in a target's data dir is kept as `<file>.before-restore-<id>`.
"""

from __future__ import annotations

import io
import posixpath
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from clusterbak.engine.prove import prove
from clusterbak.engine.verify import verify_set
from clusterbak.errors import ClusterbakError, StepFailed, VerifyError
from clusterbak.model.aofmanifest import needed, parse_aof_manifest, render_manifest, rename_prefix
from clusterbak.model.inventory import Inventory
from clusterbak.model.manifest import AofRecord, Manifest, StoredFile
from clusterbak.model.names import check_bare_name
from clusterbak.model.nodesconf import rewrite
from clusterbak.plan.restore import NodeRestore, RestorePlan
from clusterbak.redisops.connect import ConnectionOptions
from clusterbak.redisops.target import answers, shutdown_nosave, wait_down
from clusterbak.storage.reader import VerifiedReader, reporting_bytes
from clusterbak.transports.factory import TEXT_LIMIT, open_transport

Event = Callable[[str, dict], None]
STOP_TIMEOUT = 30.0


def verify_or_refuse(set_dir: Path, manifest: Manifest) -> None:
    bad = [f"{r['file']}: {r['problem']}" for r in verify_set(set_dir, manifest) if not r["ok"]]
    if bad:
        raise VerifyError(f"backup {manifest.backup_id} is damaged, nothing was touched: {bad[0]}"
                          + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))


def run_restore(plan: RestorePlan, set_dir: Path, manifest: Manifest, inventory: Inventory, conn: ConnectionOptions,
                prove_timeout: float = 120.0, accept_new_host_keys: bool = False, on_event: Event = lambda k, d: None,
                verified: bool = False) -> list[dict]:
    if not plan.ok:
        raise StepFailed("refusing to execute a plan with refusals: " + "; ".join(plan.refusals))
    if not verified:
        verify_or_refuse(set_dir, manifest)
        on_event("verified", {"backup_id": plan.backup_id})
    transports = {n.new_address: open_transport(inventory.access(n.new_address), accept_new_host_keys) for n in plan.nodes}
    try:
        _each(plan, lambda n: _stop(n, transports[n.new_address], conn), "stopped", on_event)
        _each(plan, lambda n: _replace(n, transports[n.new_address], set_dir, plan, manifest), "placed", on_event)
        _each(plan, lambda n: _start(n, transports[n.new_address]), "started", on_event)
    finally:
        for t in transports.values():
            t.close()
    return prove(conn, manifest, {n.node_id: n.new_address for n in plan.nodes}, prove_timeout)


def _each(plan: RestorePlan, action, event: str, on_event: Event) -> None:
    """One phase on every node at once (each node has its own transport); the phase ends when all are done,
    and the first failure is raised after the others finished, so no node is left mid-step."""
    def run(node: NodeRestore) -> None:  # progress: the bytes each node's readers hand out
        with reporting_bytes(lambda size: on_event("bytes", {"node": node.new_address, "bytes": size})):
            action(node)

    with ThreadPoolExecutor(max_workers=min(8, len(plan.nodes)) or 1) as pool:
        futures = {pool.submit(run, n): n for n in plan.nodes}
    for future, node in futures.items():
        future.result()
        on_event(event, {"node": node.new_address})


def _start(node: NodeRestore, transport) -> None:
    result = transport.run(node.start, timeout=120, check=False)
    if result.exit_status != 0:
        raise StepFailed(f"{node.new_address}: start command failed (exit {result.exit_status}): "
                         f"{node.start}: {(result.stderr or result.stdout).strip()[-300:]}")


def _stop(node: NodeRestore, transport, conn: ConnectionOptions) -> None:
    if node.stop == "SHUTDOWN NOSAVE":
        shutdown_nosave(conn, node.new_address)
    else:
        result = transport.run(node.stop, timeout=STOP_TIMEOUT + 30, check=False)
        if result.exit_status != 0 and answers(conn, node.new_address):
            raise StepFailed(f"{node.new_address}: stop command failed (exit {result.exit_status}): {node.stop}")
    if not wait_down(conn, node.new_address, STOP_TIMEOUT):
        raise StepFailed(f"{node.new_address} still answers {STOP_TIMEOUT:.0f}s after `{node.stop}`; stop it by hand "
                         "and run the restore again (files were not touched yet on this node)")


def _replace(node: NodeRestore, transport, set_dir: Path, plan: RestorePlan, manifest: Manifest) -> None:
    """Move the node's files aside, place the set's; if placing fails (a file changed since it was verified, a
    write error), put the node's previous files back so it is left stopped exactly as it was."""
    modes = {p: _mode_for(transport, p) for p in (node.rdb_path, node.nodes_conf_path) if p}
    moved = _move_aside(node, transport, plan.backup_id)
    try:
        _place(node, transport, set_dir, plan, manifest, modes)
    except BaseException as exc:
        try:
            _put_back(node, transport, moved)
        except Exception as undo:  # noqa: BLE001 - report both: the cause first, then what is left to do by hand
            raise StepFailed(f"{node.new_address}: placing failed ({exc}) and putting its previous files back failed "
                             f"too ({undo}); the node is stopped; move {', '.join(a for _, a in moved)} back by "
                             "hand") from exc
        if isinstance(exc, ClusterbakError):
            raise type(exc)(f"{node.new_address}: {exc}; the node is left stopped with its previous files back") \
                from exc
        raise


def _mode_for(transport, path: str) -> int:
    """The mode of the file being replaced, never world-accessible; 0640 when there is none."""
    st = transport.stat(path)
    return (st.mode & 0o770) if st is not None else 0o640


def _move_aside(node: NodeRestore, transport, backup_id: str) -> list[tuple[str, str]]:
    moved = []
    for path in (node.rdb_path, node.nodes_conf_path, node.aof_dir, node.stale_aof_dir):
        if path and path not in {m for m, _ in moved} and transport.stat(path) is not None:
            aside = f"{path}.before-restore-{backup_id}"
            if transport.stat(aside) is not None:
                aside = f"{aside}-{int(time.time())}"
            transport.rename(path, aside)
            moved.append((path, aside))
    return moved


def _put_back(node: NodeRestore, transport, moved: list[tuple[str, str]]) -> None:
    for path, aside in reversed(moved):
        if transport.stat(path) is not None:  # a placed file (or a half-made AOF dir): keep it beside, not over
            transport.rename(path, f"{path}.failed-restore-{int(time.time())}")
        transport.rename(aside, path)


def _place(node: NodeRestore, transport, set_dir: Path, plan: RestorePlan, manifest: Manifest,
           modes: dict[str, int]) -> None:
    conf = manifest.conf_of(node.node_id)
    assert conf is not None  # the plan refused nodes without one
    text = _read_verified(set_dir, conf.file).decode()
    if node.rewrite_nodes_conf:
        text = rewrite(text, plan.mapping)
    transport.write_from(node.nodes_conf_path, io.BytesIO(text.encode()), mode=modes.get(node.nodes_conf_path, 0o640))
    shard = manifest.shard(node.shard)
    if node.from_aof:
        _place_aof(node, transport, set_dir, shard.aof)
    elif node.aof_dir:  # appendonly yes: the node would ignore dump.rdb, so the dump becomes the AOF base
        transport.makedirs(node.aof_dir)
        transport.write_from(posixpath.join(node.aof_dir, node.aof_base_name),
                             VerifiedReader(set_dir, shard.file), mode=0o640)
        manifest_name = node.aof_base_name[: -len(".1.base.rdb")] + ".manifest"
        transport.write_from(posixpath.join(node.aof_dir, manifest_name),
                             io.BytesIO(f"file {node.aof_base_name} seq 1 type b\n".encode()), mode=0o640)
    else:
        transport.write_from(node.rdb_path, VerifiedReader(set_dir, shard.file), mode=modes.get(node.rdb_path, 0o640))


def _read_verified(set_dir: Path, record: StoredFile) -> bytes:
    if record.stored_size > TEXT_LIMIT:
        raise VerifyError(f"{set_dir / record.path} is larger than {TEXT_LIMIT} bytes; not a nodes.conf")
    return VerifiedReader(set_dir, record).read()


def _place_aof(node: NodeRestore, transport, set_dir: Path, aof: AofRecord) -> None:
    """An AOF set: the base and incr files (renamed to the target's appendfilename) and a manifest naming them."""
    if aof.manifest_text is None:  # a pre-7.0 single appendonly.aof: Redis 7 upgrades it on start
        (record,) = aof.files
        transport.write_from(posixpath.join(node.data_dir, node.aof_filename), VerifiedReader(set_dir, record),
                             mode=0o640)
        return
    transport.makedirs(node.aof_dir)
    files = needed(parse_aof_manifest(aof.manifest_text))
    renamed = rename_prefix(files, aof.filename, node.aof_filename)
    by_name = {f.name: f for f in aof.files}
    for old, new in zip(files, renamed):
        transport.write_from(posixpath.join(node.aof_dir, check_bare_name(new.name)),
                             VerifiedReader(set_dir, by_name[old.name]), mode=0o640)
    transport.write_from(posixpath.join(node.aof_dir, f"{node.aof_filename}.manifest"),
                         io.BytesIO(render_manifest(renamed).encode()), mode=0o640)
