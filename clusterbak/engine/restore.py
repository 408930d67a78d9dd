"""Execute a RestorePlan: verify, stop all, move aside, place atomically, start all, prove.

What was in a target's data dir is kept as `<file>.before-restore-<id>`; after a restore whose proof passed,
the newest KEEP_BEFORE_RESTORE such copies of each file are kept and older ones removed.

Every step is recorded in a journal (engine/restore_journal.py). Ctrl-C or SIGTERM once: the placements under
way finish (each node's is atomic: moved aside and placed, or put back), none starts; then every node gets
its previous files back and is started (exit 130, nothing changed). Once every node was started with the
restored files, an interrupt only skips the proof. A second interrupt stops at once with the journal's exact
state and the one command to continue (`restore ID --resume`) or undo (`restore ID --rollback`).
"""

from __future__ import annotations

import io
import posixpath
import shlex
import time
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from clusterbak.engine.interrupts import StopFlag
from clusterbak.engine.node_extras import extras_paths, place_extras
from clusterbak.engine.placed_once import PlacedOnce
from clusterbak.engine.prove import prove
from clusterbak.engine.restore_journal import Journal, RestoreJournal
from clusterbak.engine.verify import verify_set
from clusterbak.errors import ClusterbakError, Interrupted, StepFailed, VerifyError
from clusterbak.model.aofmanifest import needed, parse_aof_manifest, rename_prefix, render_manifest
from clusterbak.model.inventory import Inventory
from clusterbak.model.manifest import AofRecord, Manifest, StoredFile
from clusterbak.model.names import check_bare_name
from clusterbak.model.nodesconf import rewrite
from clusterbak.plan.restore import KEEP_BEFORE_RESTORE, NodeRestore, RestorePlan, restore_step
from clusterbak.redisops.connect import ConnectionOptions
from clusterbak.redisops.target import answers, shutdown_nosave, wait_down
from clusterbak.storage.reader import VerifiedReader, reporting_bytes
from clusterbak.storage.repository import StoredSet, require_identities
from clusterbak.transports.factory import TEXT_LIMIT, open_transport

Event = Callable[[str, dict], None]
STOP_TIMEOUT = 30.0


class RestoreInterrupted(Interrupted):
    """Ctrl-C or SIGTERM stopped a restore; the message says the state it left and the command to run."""


def verify_or_refuse(set_dir: StoredSet, manifest: Manifest) -> None:
    require_identities(set_dir, manifest)
    bad = [f"{r['file']}: {r['problem']}" for r in verify_set(set_dir, manifest) if not r["ok"]]
    if bad:
        raise VerifyError(f"backup {manifest.backup_id} is damaged, nothing was touched: {bad[0]}"
                          + (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))


def run_restore(
    plan: RestorePlan,
    set_dir: StoredSet,
    manifest: Manifest,
    inventory: Inventory,
    conn: ConnectionOptions,
    prove_timeout: float = 120.0,
    accept_new_host_keys: bool = False,
    on_event: Event = lambda k, d: None,
    verified: bool = False,
    journal_file: Path | None = None,
    resume: RestoreJournal | None = None,
    stop: StopFlag | None = None,
    commands: dict[str, str] | None = None,
    start_when_placed: bool = False,
) -> list[dict]:
    """`resume`: go on from a journal (nodes stopped/placed already are not done again). `commands`: the exact
    `--resume` / `--rollback` command lines to print when a second interrupt stops the run. `start_when_placed`:
    each node starts as soon as its own files are placed, so nodes load while others are still being placed -
    only for a drill's throwaway lab: a real cluster starts no node before every node was placed."""
    if not plan.ok:
        raise StepFailed("refusing to execute a plan with refusals: " + "; ".join(plan.refusals))
    _step(plan, "verify", on_event)  # `verified`: the caller did it before planning (prepare_restore)
    if not verified:
        verify_or_refuse(set_dir, manifest)
        on_event("verified", {"backup_id": plan.backup_id})
    stop = stop or StopFlag()
    transports: dict = {}
    try:
        with stop.on_sigint(lambda: on_event("interrupt", {"node": "finishing the placements under way"})):
            journal = Journal(journal_file, resume or RestoreJournal.new(plan, set_dir.where.rsplit("/", 1)[0]))
            try:
                for n in plan.nodes:
                    transports[n.new_address] = open_transport(inventory.access(n.new_address), accept_new_host_keys)
                _execute(plan, set_dir, manifest, conn, transports, journal, stop, on_event, commands,
                         start_when_placed)
            except KeyboardInterrupt:  # the second interrupt: what runs in the pool finishes, nothing new starts
                journal.save()
                raise RestoreInterrupted(stopped_at_once(journal, commands)) from None
            except RestoreInterrupted:
                raise
            except ClusterbakError as exc:  # a failed step: say the state it left and the two ways on
                raise type(exc)(f"{exc}. Now: {journal.data.summary()}. To continue once fixed: "
                                f"{_cmd(commands, 'resume', plan.backup_id)}; to undo: "
                                f"{_cmd(commands, 'rollback', plan.backup_id)}") from exc
    finally:
        for t in transports.values():
            t.close()
    _step(plan, "prove", on_event)
    try:
        checks = prove(conn, manifest, {n.node_id: n.new_address for n in plan.nodes}, prove_timeout, on_event)
    except KeyboardInterrupt:
        raise RestoreInterrupted(f"restore of {plan.backup_id} interrupted during the proof: every node was started "
                                 "with the restored files; check the cluster (`clusterbak check`); to undo: "
                                 f"{_cmd(commands, 'rollback', plan.backup_id)}") from None
    if all(c["ok"] for c in checks):
        journal.remove()
        _step(plan, "prune", on_event)
        _each(plan, lambda n: _keep_recent_copies(n, inventory, accept_new_host_keys), "pruned", lambda k, d: None)
    else:
        journal.mark(phase="proof failed")
    return checks


def _step(plan: RestorePlan, key: str, on_event: Event) -> None:
    """Report a step as it begins, in the words --dry-run printed for it (plan.steps)."""
    on_event("step", {"step": key, "text": restore_step(plan, key)})


def _execute(plan: RestorePlan, set_dir: StoredSet, manifest: Manifest, conn: ConnectionOptions, transports: dict,
             journal: Journal, stop: StopFlag, on_event: Event, commands: dict[str, str] | None,
             start_when_placed: bool = False) -> None:
    def stop_one(n: NodeRestore) -> None:
        if not (stop.requested or journal.node(n.new_address).stopped):
            _stop(n, transports[n.new_address], conn)
            journal.mark(n.new_address, stopped=True)

    copies = PlacedOnce() if start_when_placed else None  # a drill's lab: each shard written once, then linked

    def place_one(n: NodeRestore) -> None:
        progress = journal.node(n.new_address)
        if stop.requested or progress.placed:
            return
        # a run killed mid-placement (--resume) already made this restore's copies: keep them, do not copy again
        already = []
        if progress.placing:
            _remove_placed(n, transports[n.new_address], set())  # only the temp files a killed write left
            already = _copies_of_this_restore(n, transports[n.new_address], plan.backup_id)
        journal.mark(n.new_address, placing=True)
        moved = _replace(n, transports[n.new_address], set_dir, plan, manifest, already, copies)
        journal.mark(n.new_address, moved=[list(m) for m in moved], placed=True)

    def place_and_start(n: NodeRestore) -> None:
        place_one(n)
        if not stop.requested:
            start_one(n)

    def start_one(n: NodeRestore) -> None:
        if not (journal.node(n.new_address).started or answers(conn, n.new_address)):
            _start(n, transports[n.new_address])
        journal.mark(n.new_address, started=True)

    journal.mark(phase="stopping")
    _step(plan, "stop", on_event)
    _each(plan, stop_one, "stopped", on_event)
    if not stop.requested and start_when_placed:  # a drill's lab: place and start each node on its own
        journal.mark(phase="placing")
        _step(plan, "place", on_event)
        _each(plan, place_and_start, "started", on_event)
        assert copies is not None
        on_event("copies", {"linked": dict(copies.linked)})
    elif not stop.requested:
        journal.mark(phase="placing")
        _step(plan, "place", on_event)
        _each(plan, place_one, "placed", on_event)
    if stop.requested and start_when_placed:  # the drill removes its lab: nothing to put back
        raise RestoreInterrupted(f"restore of {plan.backup_id} into the drill lab interrupted while placing")
    if stop.requested:
        undo(plan, journal, transports, conn, on_event)
        raise RestoreInterrupted(f"restore of {plan.backup_id} interrupted before any node was started with the "
                                 "restored files: every node has its previous files back and was started again; "
                                 "nothing changed")
    if not start_when_placed:
        journal.mark(phase="starting")
        _step(plan, "start", on_event)
        _each(plan, start_one, "started", on_event)
    if stop.requested:
        raise RestoreInterrupted(f"restore of {plan.backup_id} interrupted after every node was started with the "
                                 "restored files; the proof did not run: check the cluster (`clusterbak check`); "
                                 f"to undo: {_cmd(commands, 'rollback', plan.backup_id)}")
    journal.mark(phase="proving")


def stopped_at_once(journal: Journal, commands: dict[str, str] | None) -> str:
    backup_id = journal.data.backup_id
    return (f"restore of {backup_id} stopped at once by a second interrupt ({journal.data.phase}); now: "
            f"{journal.data.summary()}. To continue: {_cmd(commands, 'resume', backup_id)}; to undo: "
            f"{_cmd(commands, 'rollback', backup_id)}")


def _cmd(commands: dict[str, str] | None, which: str, backup_id: str) -> str:
    return (commands or {}).get(which) or f"clusterbak restore {backup_id} --dest DEST --inventory FILE --{which}"


def undo(plan: RestorePlan, journal: Journal, transports: dict, conn: ConnectionOptions,
         on_event: Event = lambda k, d: None) -> None:
    """Every node back to its previous files (the placed ones removed, the `.before-restore` copies renamed back)
    and started again, if clusterbak stopped it. The journal goes once every node is back."""
    journal.mark(phase="rolling back")

    def one(n: NodeRestore) -> None:
        progress = journal.node(n.new_address)
        transport = transports[n.new_address]
        if progress.started or (progress.stopped and answers(conn, n.new_address)):
            _stop(n, transport, conn)
            journal.mark(n.new_address, started=False)
        if progress.placing or progress.placed:
            moved: list[tuple[str, str]]
            if progress.placed:  # every file at the node's paths is the restore's; the originals are the copies
                moved = [(m[0], m[1]) for m in progress.moved]
                ours = {p for p in (n.rdb_path, n.nodes_conf_path, n.aof_dir) if p}
            else:  # killed mid-placement: only a path with this restore's copy beside it surely holds ours
                moved = _copies_of_this_restore(n, transport, plan.backup_id)
                ours = {path for path, _ in moved}
            _remove_placed(n, transport, ours)
            _put_back(n, transport, moved)
            journal.mark(n.new_address, placing=False, placed=False, moved=[])
        if progress.stopped:
            _start(n, transport)
            journal.mark(n.new_address, stopped=False)

    _each(plan, one, "rolled back", on_event)
    journal.remove()


def _copies_of_this_restore(node: NodeRestore, transport, backup_id: str) -> list[tuple[str, str]]:
    """After a kill -9 mid-placement the journal has no list: this restore's copies have a known name."""
    paths = (node.rdb_path, node.nodes_conf_path, node.aof_dir, node.stale_aof_dir)
    return [(p, f"{p}.before-restore-{backup_id}") for p in dict.fromkeys(paths)
            if p and transport.stat(f"{p}.before-restore-{backup_id}") is not None]


def _remove_placed(node: NodeRestore, transport, ours: set[str]) -> None:
    """The files and dirs the restore placed (`ours`), and any temp file a killed write left beside them."""
    for path in dict.fromkeys(p for p in (node.rdb_path, node.nodes_conf_path, node.aof_dir) if p):
        quoted = shlex.quote(path)
        script = f"rm -f -- {quoted}.clusterbak-tmp-*" + (f" && rm -rf -- {quoted}" if path in ours else "")
        result = transport.run(script, timeout=60, check=False)
        if result.exit_status != 0:
            raise StepFailed(f"{node.new_address}: cannot remove restored {path}: "
                             f"{(result.stderr or result.stdout).strip()[-200:]}")


def _keep_recent_copies(node: NodeRestore, inventory: Inventory, accept_new_host_keys: bool) -> None:
    """Keep the newest KEEP_BEFORE_RESTORE `.before-restore-*` copies of each file (by ctime: the rename that made
    each copy sets it), remove older ones."""
    transport = open_transport(inventory.access(node.new_address), accept_new_host_keys)
    try:
        for path in dict.fromkeys(p for p in (node.rdb_path, node.nodes_conf_path, node.aof_dir, node.stale_aof_dir)
                                  if p):
            script = (
                f"ls -1dtc -- {shlex.quote(path)}.before-restore-* 2>/dev/null | tail -n +{KEEP_BEFORE_RESTORE + 1}"
                ' | while IFS= read -r old; do rm -rf -- "$old"; done'
            )
            transport.run(script, timeout=60, check=False)
    finally:
        transport.close()


def _each(plan: RestorePlan, action, event: str, on_event: Event) -> None:
    """One phase on every node at once (each node has its own transport); the phase ends when all are done,
    and the first failure is raised after the others finished, so no node is left mid-step. A second
    interrupt (KeyboardInterrupt) lets the actions under way finish and starts none of the others."""
    def run(node: NodeRestore) -> None:  # progress: the bytes each node's readers hand out
        with reporting_bytes(lambda size: on_event("bytes", {"node": node.new_address, "bytes": size})):
            action(node)

    pool = ThreadPoolExecutor(max_workers=min(8, len(plan.nodes)) or 1)
    try:
        futures = {pool.submit(run, n): n for n in plan.nodes}
        pool.shutdown(wait=True)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
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


def _replace(node: NodeRestore, transport, set_dir: StoredSet, plan: RestorePlan, manifest: Manifest,
             already: Sequence[tuple[str, str]] = (), copies: PlacedOnce | None = None) -> list[tuple[str, str]]:
    """Move the node's files aside, place the set's; if placing fails (a file changed since it was verified, a
    write error), put the node's previous files back so it is left stopped exactly as it was. `already`: copies
    an earlier, cut-short run made (--resume): kept, never moved aside a second time. Returns what was moved."""
    modes = {p: _mode_for(transport, p) for p in (node.rdb_path, node.nodes_conf_path) if p}
    modes.update({p: _mode_for(transport, p, 0o600) for p in extras_paths(node)})  # secrets: 0600 when new
    moved = list(already) + _move_aside(node, transport, plan.backup_id, {p for p, _ in already})
    try:
        _place(node, transport, set_dir, plan, manifest, modes, copies)
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
    return moved


def _mode_for(transport, path: str, default: int = 0o640) -> int:
    """The mode of the file being replaced, never world-accessible; `default` when there is none."""
    st = transport.stat(path)
    return (st.mode & 0o770) if st is not None else default


def _move_aside(node: NodeRestore, transport, backup_id: str,
                skip: AbstractSet[str] = frozenset()) -> list[tuple[str, str]]:
    moved: list[tuple[str, str]] = []
    for path in (node.rdb_path, node.nodes_conf_path, node.aof_dir, node.stale_aof_dir, *extras_paths(node)):
        if path and path not in skip and path not in {m for m, _ in moved} and transport.stat(path) is not None:
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


def _place(node: NodeRestore, transport, set_dir: StoredSet, plan: RestorePlan, manifest: Manifest,
           modes: dict[str, int], copies: PlacedOnce | None = None) -> None:
    conf = manifest.conf_of(node.node_id)
    assert conf is not None  # the plan refused nodes without one
    # the plan fills these in for every node it places (the AOF paths when the target runs appendonly yes)
    assert node.nodes_conf_path is not None and node.rdb_path is not None
    text = _read_verified(set_dir, conf.file).decode()
    if node.rewrite_nodes_conf:
        text = rewrite(text, plan.mapping)
    transport.write_from(node.nodes_conf_path, io.BytesIO(text.encode()), mode=modes.get(node.nodes_conf_path, 0o640))
    place_extras(node, transport, set_dir, manifest, modes)
    shard = manifest.shard(node.shard)
    if node.from_aof:
        assert shard.aof is not None  # from_aof: the shard was backed up as an AOF
        _place_aof(node, transport, set_dir, shard.aof)
    elif node.aof_dir:  # appendonly yes: the node would ignore dump.rdb, so the dump becomes the AOF base
        assert node.aof_base_name is not None and shard.file is not None
        transport.makedirs(node.aof_dir)
        transport.write_from(posixpath.join(node.aof_dir, node.aof_base_name),
                             VerifiedReader(set_dir, shard.file), mode=0o640)
        manifest_name = node.aof_base_name[: -len(".1.base.rdb")] + ".manifest"
        transport.write_from(posixpath.join(node.aof_dir, manifest_name),
                             io.BytesIO(f"file {node.aof_base_name} seq 1 type b\n".encode()), mode=0o640)
    else:
        assert shard.file is not None  # an RDB shard
        record, path = shard.file, node.rdb_path

        def write() -> int:
            return transport.write_from(path, VerifiedReader(set_dir, record), mode=modes.get(path, 0o640))

        if copies is None:
            write()
        else:
            copies.place(record.path, path, transport, write,
                         record.raw_size if record.raw_size is not None else record.stored_size)


def _read_verified(set_dir: StoredSet, record: StoredFile) -> bytes:
    if record.stored_size > TEXT_LIMIT:
        raise VerifyError(f"{set_dir.label(record.path)} is larger than {TEXT_LIMIT} bytes; not a nodes.conf")
    return VerifiedReader(set_dir, record).read()


def _place_aof(node: NodeRestore, transport, set_dir: StoredSet, aof: AofRecord) -> None:
    """An AOF set: the base and incr files (renamed to the target's appendfilename) and a manifest naming them."""
    assert node.data_dir is not None and node.aof_filename is not None  # the plan's AOF layout of the target
    if aof.manifest_text is None:  # a pre-7.0 single appendonly.aof: Redis 7 upgrades it on start
        (record,) = aof.files
        transport.write_from(posixpath.join(node.data_dir, node.aof_filename), VerifiedReader(set_dir, record),
                             mode=0o640)
        return
    assert node.aof_dir is not None
    transport.makedirs(node.aof_dir)
    files = needed(parse_aof_manifest(aof.manifest_text))
    renamed = rename_prefix(files, aof.filename, node.aof_filename)
    by_name = {f.name: f for f in aof.files}
    for old, new in zip(files, renamed, strict=True):
        transport.write_from(posixpath.join(node.aof_dir, check_bare_name(new.name)),
                             VerifiedReader(set_dir, by_name[old.name]), mode=0o640)
    transport.write_from(posixpath.join(node.aof_dir, f"{node.aof_filename}.manifest"),
                         io.BytesIO(render_manifest(renamed).encode()), mode=0o640)


def rollback_restore(journal_file: Path, existing: RestoreJournal, inventory: Inventory, conn: ConnectionOptions,
                     accept_new_host_keys: bool = False, on_event: Event = lambda k, d: None) -> str:
    """`restore ID --rollback`: every node of a cut-short restore back to its previous files, started again.
    Returns the state it started from."""
    before = existing.summary()
    plan = existing.restore_plan()
    journal = Journal(journal_file, existing)
    transports = {
        n.new_address: open_transport(inventory.access(n.new_address), accept_new_host_keys) for n in plan.nodes
    }
    try:
        undo(plan, journal, transports, conn, on_event)
    finally:
        for t in transports.values():
            t.close()
    return before
