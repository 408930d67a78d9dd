"""Restore planning for a node's config file, users and modules. Pure.

Where files go comes from the inventory (`config_file`, `aclfile`) or the live target (INFO server config_file,
CONFIG GET aclfile), never from the set. The stored config file is edited only where it carries the target's layout
(dir, dbfilename, cluster-config-file, AOF names, aclfile) or, with --map, its address.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from clusterbak.model.address import Address
from clusterbak.model.inventory import NodeAccess
from clusterbak.model.manifest import Manifest, NodeConf
from clusterbak.model.names import NameError_, check_absolute_dir
from clusterbak.model.nodeconfig import (
    DirectiveChange,
    ModuleLoaded,
    config_changes,
    entries,
    module_problem,
    placed_edits,
    rewrite_directives,
)
from clusterbak.model.nodesconf import NewAddress


@dataclass(frozen=True, slots=True)
class ExtrasPlacement:
    config_path: str | None = None
    config_edits: tuple[tuple[str, str], ...] = ()
    config_changes: tuple[DirectiveChange, ...] = ()
    acl_path: str | None = None
    refusal: str | None = None
    notes: tuple[str, ...] = ()


def stored_appendonly(stored_config: str | None) -> bool | None:
    """The stored config's appendonly (a setting, not a path: with --with-config the target runs with it)."""
    value = entries(stored_config or "").get("appendonly")
    return None if not value else value[-1].lower() == "yes"


def plan_extras(where: str, conf: NodeConf, access: NodeAccess, live_config_file: str | None,
                live_aclfile: str | None, current_config: str | None, stored_config: str | None,
                old: str, new: NewAddress, layout: dict[str, str], with_config: bool,
                with_acl: bool) -> ExtrasPlacement:
    """What --with-config / --with-acl place on one target, or why it cannot."""
    notes: list[str] = []
    aclfile = access.aclfile or live_aclfile or None
    config_path = access.config_file or live_config_file or None
    try:
        for value in (aclfile, config_path):
            if value:
                check_absolute_dir(value)
    except NameError_ as exc:
        return ExtrasPlacement(refusal=f"{where}: {exc}")
    edits: dict[str, str] = {}
    changes: tuple[DirectiveChange, ...] = ()
    needs_acl = with_acl
    if with_config:
        if conf.config is None or stored_config is None:
            return ExtrasPlacement(refusal=f"{where}: the backup holds no config file for node {conf.id[:8]} "
                                           "(see the backup's warnings); restore without --with-config")
        if not config_path:
            return ExtrasPlacement(refusal=f"{where}: where its config file goes is unknown (the node is down or "
                                           "started without one); set config_file for this node in the inventory")
        if "aclfile" in entries(stored_config):
            aclfile = aclfile or posixpath.join(posixpath.dirname(config_path), "users.acl")
            layout = {**layout, "aclfile": aclfile}
            needs_acl = True
        elif with_acl:
            notes.append("the stored config file has no aclfile: its users come with its `user` lines")
            needs_acl = False
        was = Address.of(old)
        edits = placed_edits(stored_config, was.host, was.port, new.host, new.port, new.cport, layout)
        changes = config_changes(current_config, rewrite_directives(stored_config, edits))
        if current_config is None:
            notes.append(f"no current config file at {config_path}: every directive is new")
    acl_path = None
    if needs_acl:
        if conf.acl is None:
            return ExtrasPlacement(refusal=f"{where}: the backup recorded no users for node {conf.id[:8]} (see the "
                                           "backup's warnings); restore without --with-acl")
        if not aclfile:
            return ExtrasPlacement(refusal=f"{where}: the target has no aclfile to place the users into (it keeps "
                                           "users in its config file, or it is down); configure aclfile on it or "
                                           "set aclfile for this node in the inventory, or use --with-config")
        acl_path = aclfile
    return ExtrasPlacement(config_path if with_config else None, tuple(edits.items()), changes, acl_path,
                           None, tuple(notes))


def module_checks(
    manifest: Manifest, targets: dict[str, tuple[ModuleLoaded, ...] | None]
) -> tuple[list[str], list[str]]:
    """(refusals, warnings): every module a node of the set loaded must be loaded, at least at that version, by
    every target that answers; a target that is down or refuses MODULE LIST cannot be checked (a warning)."""
    needed = [ModuleLoaded(m.name, m.version) for m in manifest.modules().values()]
    refusals: list[str] = []
    warnings: list[str] = []
    if not needed:
        return refusals, warnings
    for address, loaded in sorted(targets.items()):
        if loaded is None:
            names = ", ".join(f"{m.name} {m.version}" for m in needed)
            warnings.append(f"{address}: cannot check its modules (down, or MODULE LIST refused): it must load "
                            f"{names} or it will not load the data")
            continue
        refusals += [p for m in needed if (p := module_problem(m, loaded, address))]
    return refusals, warnings
