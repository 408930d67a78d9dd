"""The read-only look at a cluster that topology, check and every mutating command start from."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from clusterbak.errors import ClusterbakError, InventoryError
from clusterbak.model.checks import (
    CRITICAL,
    DEFAULT_MAX_LAG,
    INFO,
    WARNING,
    Finding,
    cluster_findings,
    leftover_findings,
    node_findings,
    pin_findings,
)
from clusterbak.model.inventory import Inventory
from clusterbak.model.redisconf import dir_directive
from clusterbak.model.state import NodeState
from clusterbak.model.topology import Topology
from clusterbak.redisops.connect import ConnectionOptions
from clusterbak.redisops.discover import PROBE_WORKERS, discover, probe_all
from clusterbak.redisops.runlock import lock_addresses, lock_holders
from clusterbak.storage.pins import read_pin
from clusterbak.transports.factory import open_transport, read_text


@dataclass(frozen=True, slots=True)
class Inspection:
    topology: Topology
    states: tuple[NodeState, ...]
    findings: tuple[Finding, ...]


def inspect(opts: ConnectionOptions, inventory: Inventory | None = None,
            max_lag: int = DEFAULT_MAX_LAG) -> Inspection:
    topology = discover(opts)
    states = probe_all(opts, topology)
    findings = cluster_findings(topology, states, max_lag)
    for state in states:
        override = False
        if inventory is not None:
            try:
                override = inventory.access(state.node.address).data_dir is not None
            except InventoryError:
                override = False
        findings.extend(node_findings(state, override))
    pins = {}
    for node in topology.nodes:
        try:
            record = read_pin(node.address)
        except ClusterbakError as exc:
            findings.append(Finding(CRITICAL, "pin_record_unreadable", node.address, str(exc)))
            continue
        if record is not None:
            pins[node.address] = (record.originals, record.describe())
    holders = lock_holders(opts, lock_addresses(topology))
    for holder in holders:
        findings.append(Finding(WARNING if holder.stale else INFO, "run_lock", holder.node,
                                f"run lock held: {holder.describe()}"
                                + ("; break it with --break-lock" if holder.stale else "")))
    live = next((h.describe() for h in holders if not h.stale), None)
    findings.extend(pin_findings(states, pins, opts.seed, live))
    if inventory is not None:
        findings.extend(inventory_findings(topology, inventory))
        findings.extend(config_file_findings(states, inventory))
        findings.extend(temp_file_findings(states, inventory))
    return Inspection(topology, states, tuple(findings))


TEMP_PATTERNS = ("temp-*.rdb", "temp-rewriteaof-*.aof", "temp-appendonly.aof.*")


def temp_file_findings(states: tuple[NodeState, ...], inventory: Inventory) -> list[Finding]:
    """Redis temp files in each reachable host's data dir (and its appendonlydir) - what a killed child leaves."""
    return each_node(states, lambda state: _temp_files(state, inventory))


def _temp_files(state: NodeState, inventory: Inventory) -> list[Finding]:
    try:
        access = inventory.access(state.node.address)
    except InventoryError:
        return []
    data_dir = access.data_dir or (state.config.get("dir") if state.reachable else None)
    if not data_dir:
        return []
    names = " -o ".join(f"-name {shlex.quote(p)}" for p in TEMP_PATTERNS)
    command = f"find {shlex.quote(data_dir)} -maxdepth 2 -type f \\( {names} \\) -exec wc -c {{}} + 2>/dev/null"
    try:
        transport = open_transport(access)
        try:
            result = transport.run(command, timeout=30, check=False)
        finally:
            transport.close()
    except ClusterbakError as exc:
        return [Finding(INFO, "temp_files_unchecked", state.node.address, f"temp files not checked: {exc}")]
    files = []
    for line in result.stdout.splitlines():
        size, _, path = line.strip().partition(" ")
        if size.isdigit() and path and path != "total":
            files.append((path, int(size)))
    saving = state.reachable and bool(state.int_info("rdb_bgsave_in_progress") or
                                      state.int_info("aof_rewrite_in_progress") or
                                      state.int_info("master_sync_in_progress"))
    return leftover_findings(state.node.address, files, saving)


def config_file_findings(states: tuple[NodeState, ...], inventory: Inventory) -> list[Finding]:
    """CONFIG GET dir always answers the resolved cwd, so `dir ./` only shows in the config file itself."""
    return each_node(states, lambda state: _config_file(state, inventory))


def _config_file(state: NodeState, inventory: Inventory) -> list[Finding]:
    conf = state.info.get("config_file") if state.reachable else None
    try:
        access = inventory.access(state.node.address)
    except InventoryError:
        return []
    addr = state.node.address
    unusable = "backup, restore and restart reach this node's files this way"
    try:
        transport = open_transport(access)
    except ClusterbakError as exc:
        return [Finding(CRITICAL, "transport_unusable", addr, f"{exc}: {unusable}")]
    try:
        try:  # reaching the host at all: a changed host key or a refused login fails every backup and restart
            transport.stat(conf or "/")
        except ClusterbakError as exc:
            return [Finding(CRITICAL, "transport_unusable", addr, f"{exc}: {unusable}")]
        if not conf:
            if state.reachable:
                return [Finding(INFO, "no_config_file", addr, "started without a config file; dir cannot be checked")]
            return []
        try:
            text = read_text(transport, conf)
        except ClusterbakError as exc:
            return [Finding(WARNING, "config_file_unreadable", addr, f"cannot read {conf}: {exc}")]
    finally:
        transport.close()
    data_dir = dir_directive(text)
    if data_dir is None or not data_dir.startswith("/"):
        shown = "no dir directive" if data_dir is None else f"dir {data_dir}"
        return [Finding(CRITICAL, "dir_relative", addr,
                        f"{conf} has {shown}: the data dir depends on where redis-server was started; "
                        "set an absolute dir in that file")]
    return []


def each_node(states: tuple[NodeState, ...], check: Callable[[NodeState], list[Finding]]) -> list[Finding]:
    """One check per node, all at once (each may be an SSH round trip); findings in the nodes' order."""
    if len(states) <= 1:
        return [f for state in states for f in check(state)]
    with ThreadPoolExecutor(max_workers=min(PROBE_WORKERS, len(states))) as pool:
        return [f for found in pool.map(check, states) for f in found]


def inventory_findings(topology: Topology, inventory: Inventory) -> list[Finding]:
    out = []
    for node in topology.nodes:
        try:
            inventory.access(node.address)
        except InventoryError as exc:
            out.append(Finding(CRITICAL, "inventory_missing_node", node.address, str(exc)))
    for address in inventory.unknown_addresses(topology):
        out.append(Finding("warning", "inventory_extra_node", address,
                           f"{inventory.source}: {address} is not a member of this cluster"))
    return out
