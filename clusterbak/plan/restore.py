"""Which file goes where, and how each target node is stopped and started, for a restore. Pure."""

from __future__ import annotations

import posixpath
from dataclasses import asdict, dataclass, replace
from typing import Any

from clusterbak.errors import InventoryError, UsageError
from clusterbak.model.address import Address
from clusterbak.model.inventory import Inventory, NodeAccess
from clusterbak.model.manifest import Manifest
from clusterbak.model.names import NameError_, check_absolute_dir, check_address, check_bare_name
from clusterbak.model.nodeconfig import DirectiveChange
from clusterbak.model.nodesconf import NewAddress, NodesConfError, parse_new_address
from clusterbak.model.state import TargetState as TargetState  # moved to model/ (redisops builds it); kept here
from clusterbak.model.versions import restore_version_refusal, written_by
from clusterbak.plan.node_extras import module_checks, plan_extras, stored_appendonly


@dataclass(frozen=True, slots=True)
class NodeRestore:
    node_id: str
    role: str
    shard: int
    old_address: str
    new_address: str
    new_cport: int
    data_dir: str | None
    rdb_path: str | None
    nodes_conf_path: str | None
    aof_dir: str | None  # appendonly yes: the dump becomes the AOF base file in this dir (or an AOF set goes there)
    aof_base_name: str | None
    aof_filename: str | None
    nodes_conf_source: str
    rewrite_nodes_conf: bool
    dump_source: str
    dump_compression: str
    stop: str  # a shell command, or "SHUTDOWN NOSAVE" over Redis
    start: str | None
    replaces_keys: int
    refusal: str | None = None
    from_aof: bool = False  # the set holds this shard's AOF files, not a dump
    stale_aof_dir: str | None = None  # a down target of unknown appendonly: an old AOF dir here is moved aside
    config_path: str | None = None  # --with-config: the target's own config file, replaced by the stored one
    config_edits: tuple[tuple[str, str], ...] = ()  # directives set for this target (layout, --map addresses)
    config_changes: tuple[DirectiveChange, ...] = ()  # current vs placed, secrets masked
    acl_path: str | None = None  # --with-acl (or an aclfile in the placed config): where the users file goes

    def __post_init__(self) -> None:  # read back from JSON (the restore journal): lists -> tuples, dicts -> records
        object.__setattr__(self, "config_edits", tuple(tuple(e) for e in self.config_edits))
        object.__setattr__(self, "config_changes", tuple(
            c if isinstance(c, DirectiveChange) else DirectiveChange(**c) for c in self.config_changes))


@dataclass(frozen=True, slots=True)
class RestorePlan:
    backup_id: str
    nodes: tuple[NodeRestore, ...]
    refusals: tuple[str, ...]
    warnings: tuple[str, ...]
    @property
    def ok(self) -> bool:
        return not self.refusals

    @property
    def mapping(self) -> dict[str, NewAddress]:
        """node id -> its new address, for rewriting every node's nodes.conf alike."""
        out = {}
        for n in self.nodes:
            new = Address.of(n.new_address)
            out[n.node_id] = NewAddress(new.host, new.port, n.new_cport)
        return out

    @property
    def steps(self) -> tuple[str, ...]:
        """What the executor does, in its order (engine/restore.py reports each as it begins); --dry-run prints
        these."""
        return tuple(text for _, text in restore_steps(self.nodes))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "steps": list(self.steps)}


KEEP_BEFORE_RESTORE = 2  # `.before-restore-*` copies kept per file after a proven restore (docs/restore.md)
STEP_KEYS = ("verify", "stop", "place", "start", "prove", "prune")


def restore_steps(nodes: tuple[NodeRestore, ...]) -> tuple[tuple[str, str], ...]:
    """(key, text) of every step of a restore, in the order engine/restore.py runs them; the text says what is
    placed on these nodes (their AOF files or dump, config files and users only where the plan places them)."""
    placed = ["nodes.conf"]
    if any(n.from_aof for n in nodes):
        placed.append("AOF files")
    if any(not n.from_aof for n in nodes):
        placed.append("dump" + (" (as the AOF base where appendonly is yes)" if any(
            n.aof_dir and not n.from_aof for n in nodes) else ""))
    if any(n.config_path for n in nodes):
        placed.append("config file")
    if any(n.acl_path for n in nodes):
        placed.append("users")
    what = ", ".join(placed[:-1]) + " and " + placed[-1]
    return (
        ("verify", "verify every file of the set"),
        ("stop", "stop every target node"),
        ("place", f"move each node's files aside (.before-restore-ID) and place its {what}"),
        ("start", "start every target node"),
        ("prove", "prove: cluster_state ok, slots, roles, replicas in sync, key counts"),
        ("prune", f"keep the newest {KEEP_BEFORE_RESTORE} .before-restore copies of each file, remove older ones"),
    )


def restore_step(plan: RestorePlan, key: str) -> str:
    """The text of one step of `plan` (a key of STEP_KEYS), as --dry-run printed it."""
    return dict(restore_steps(plan.nodes))[key]


def target_address(manifest: Manifest, mapping: dict[str, NewAddress], old: str) -> NewAddress:
    """Where a node of the set goes: its --map entry, else the same address (bus port = port + 10000)."""
    if old in mapping:
        return mapping[old]
    host, port = check_address(old)
    return NewAddress(host, port, port + 10000)


def plan_restore(manifest: Manifest, inventory: Inventory, mapping: dict[str, NewAddress],
                 targets: dict[str, TargetState], force: bool = False, with_config: bool = False,
                 with_acl: bool = False, stored_configs: dict[str, str] | None = None) -> RestorePlan:
    """Which file goes where. Paths on a target come from the inventory or the live target's CONFIG GET (checked),
    never from the set: the manifest's recorded paths are information only. stored_configs: node id -> the set's
    config file text (needed with --with-config)."""
    refusals, warnings, nodes = [], [], []
    shard = manifest.shard_of()
    moved = any(new.address != old for old, new in mapping.items())
    for unknown in set(mapping) - {n.address for n in manifest.nodes}:
        refusals.append(f"--map {unknown}=...: {unknown} is not a node of backup {manifest.backup_id}")
    for node in manifest.nodes:
        old = node.address
        new = target_address(manifest, mapping, old)
        where = f"{old}" + (f" -> {new.address}" if new.address != old else "")
        conf = manifest.conf_of(node.id)
        if conf is None:
            refusals.append(f"{where}: the backup has no nodes.conf for node {node.id[:8]}; it cannot be restored")
            continue
        if shard[node.id] < 0:
            refusals.append(f"{where}: node belongs to no shard of the backup (failed or empty master)")
            continue
        try:
            access = inventory.access(new.address, f"is the restore target of {old}")
        except InventoryError as exc:
            refusals.append(str(exc))
            continue
        target = targets.get(new.address) or TargetState(new.address, False)
        try:
            layout = target_layout(access, target)
        except NameError_ as exc:
            refusals.append(f"{where}: {exc}")
            continue
        stored_config = (stored_configs or {}).get(node.id)
        if with_config and stored_appendonly(stored_config) is not None:  # the target runs with the stored setting
            layout = replace(layout, appendonly=bool(stored_appendonly(stored_config)), appendonly_unknown=False,
                             notes=tuple(n for n in layout.notes if "appendonly" not in n))
        for note in layout.notes:
            warnings.append(f"{where}: {note}")
        refusal = None
        if not layout.data_dir:
            refusal = (f"{where}: data dir unknown: the node is down and the inventory has no data_dir for "
                       f"{new.address}; set data_dir for this node")
        data_dir = layout.data_dir or ""
        stop, start = "SHUTDOWN NOSAVE", None
        if data_dir:
            try:
                stop = access.command("stop_command", node.id, data_dir) or (
                    f"docker stop {access.container}" if access.transport == "docker" else "SHUTDOWN NOSAVE")
                start = access.command("start_command", node.id, data_dir)
            except InventoryError as exc:
                refusals.append(f"{where}: {exc}")
                continue
        if start is None and access.transport == "docker":
            start = f"docker start {access.container}"
        if start is None and refusal is None:
            refusal = f"{where}: no start_command in the inventory; clusterbak cannot bring the node back"
        if target.reachable and target.node_id != node.id and (target.dbsize or target.known_nodes > 1) and not force:
            refusal = (f"{where}: target is node {str(target.node_id)[:8]} of another cluster or holds "
                       f"{target.dbsize} keys; use --force to overwrite it")
        s = manifest.shard(shard[node.id])
        if s.aof is not None and not layout.appendonly and refusal is None:
            refusal = (f"{where}: target has appendonly no, but this is an AOF set; set appendonly yes on the target "
                       "(it would ignore the AOF and load dump.rdb) or restore an RDB set")
        refusal = refusal or restore_version_refusal(
            where, s.rdb_version, written_by(manifest.raw, s.index), target.server
        )
        extras = None
        if (with_config or with_acl) and refusal is None and data_dir:
            extras = plan_extras(where, conf, access, target.config_file if target.reachable else None,
                                 target.config.get("aclfile") if target.reachable else None, target.config_text,
                                 stored_config, old, new, {
                                     "dir": data_dir, "dbfilename": layout.dbfilename,
                                     "cluster-config-file": layout.cluster_config_file,
                                     "appendonly": "yes" if layout.appendonly else "no",
                                     "appenddirname": layout.appenddirname, "appendfilename": layout.appendfilename},
                                 with_config, with_acl)
            refusal = extras.refusal
            warnings += [f"{where}: {n}" for n in extras.notes]
        if refusal:
            refusals.append(refusal)
        join = posixpath.join
        conf_name = layout.cluster_config_file
        nodes.append(
            NodeRestore(
                node_id=node.id,
                role=node.role,
                shard=s.index,
                old_address=old,
                new_address=new.address,
                new_cport=new.cport,
                data_dir=layout.data_dir,
                rdb_path=join(data_dir, layout.dbfilename) if data_dir else None,
                nodes_conf_path=(conf_name if conf_name.startswith("/") else join(data_dir, conf_name))
                if data_dir
                else None,
                aof_dir=join(data_dir, layout.appenddirname) if layout.appendonly and data_dir else None,
                aof_base_name=f"{layout.appendfilename}.1.base.rdb" if layout.appendonly else None,
                aof_filename=layout.appendfilename if layout.appendonly else None,
                from_aof=s.aof is not None,
                nodes_conf_source=conf.file.path,
                rewrite_nodes_conf=moved,
                dump_source=s.aof.folder if s.aof is not None else (s.file.path if s.file else ""),
                dump_compression="" if s.aof is not None or s.file is None else s.file.compression,
                stop=stop,
                start=start,
                replaces_keys=target.dbsize if target.reachable else 0,
                refusal=refusal,
                stale_aof_dir=join(data_dir, "appendonlydir") if layout.appendonly_unknown and data_dir else None,
                config_path=extras.config_path if extras else None,
                config_edits=extras.config_edits if extras else (),
                config_changes=extras.config_changes if extras else (),
                acl_path=extras.acl_path if extras else None,
            )
        )
    loaded = {n.new_address: t.modules if (t := targets.get(n.new_address)) and t.reachable else None for n in nodes}
    module_refusals, module_warnings = module_checks(manifest, loaded)
    return RestorePlan(manifest.backup_id, tuple(nodes), tuple(refusals + module_refusals),
                       tuple(warnings + module_warnings))


@dataclass(frozen=True, slots=True)
class TargetLayout:
    data_dir: str | None
    dbfilename: str
    cluster_config_file: str
    appendonly: bool
    appendonly_unknown: bool
    appenddirname: str
    appendfilename: str
    notes: tuple[str, ...]


def target_layout(access: NodeAccess, target: TargetState) -> TargetLayout:
    """The target's file layout: the inventory first (the operator said so), then the live node's CONFIG GET, then
    Redis's defaults. Every value is checked before it becomes part of a path."""
    live = target.config if target.reachable else {}
    notes: list[str] = []

    def pick(inventory_value: str | None, key: str, default: str) -> str:
        value = inventory_value or live.get(key)
        if not value:
            if not target.reachable:
                notes.append(f"node down: assuming {key} {default} (set it in the inventory to be sure)")
            return default
        return value

    data_dir = access.data_dir or live.get("dir") or None
    if data_dir:
        check_absolute_dir(data_dir)
    dbfilename = check_bare_name(pick(access.dbfilename, "dbfilename", "dump.rdb"))
    conf_name = pick(access.cluster_config_file, "cluster-config-file", "nodes.conf")
    if conf_name.startswith("/"):
        check_absolute_dir(conf_name)
    else:
        check_bare_name(conf_name)
    appendonly_value = access.appendonly or live.get("appendonly")
    unknown = appendonly_value is None
    if unknown:
        notes.append("node down and appendonly unknown: assuming no, and moving any appendonlydir aside "
                     "(set appendonly in the inventory to be sure)")
    return TargetLayout(
        data_dir=data_dir, dbfilename=dbfilename, cluster_config_file=conf_name,
        appendonly=appendonly_value == "yes", appendonly_unknown=unknown,
        appenddirname=check_bare_name(live.get("appenddirname") or "appendonlydir"),
        appendfilename=check_bare_name(live.get("appendfilename") or "appendonly.aof"), notes=tuple(notes))


def parse_maps(values: list[str]) -> dict[str, NewAddress]:
    """--map OLD=NEW[@CPORT] values -> old address -> new address; a malformed one is a usage error."""
    out = {}
    for value in values:
        old, sep, new = value.partition("=")
        if not sep:
            raise UsageError(f"--map {value!r} is not OLD_ADDR=NEW_ADDR")
        try:
            out[old] = parse_new_address(new)
        except NodesConfError as exc:
            raise UsageError(f"--map {value!r}: {exc}") from exc
    return out
