"""Preflight findings from probed node states. Pure: a list of Findings, each with a severity and a reason."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from clusterbak.model.gates import eligible_replicas
from clusterbak.model.state import NodeState, states_by_id
from clusterbak.model.topology import Shard, Topology

CRITICAL, WARNING, INFO = "critical", "warning", "info"
DEFAULT_MAX_LAG = 1024 * 1024
SLOW_FORK_USEC = 500_000


@dataclass(frozen=True, slots=True)
class Finding:
    severity: str
    code: str
    subject: str  # a node address, a shard's master address, or "cluster"
    message: str


def has_critical(findings: tuple[Finding, ...]) -> bool:
    return any(f.severity == CRITICAL for f in findings)


def cluster_findings(
    topology: Topology, states: tuple[NodeState, ...], max_lag: int = DEFAULT_MAX_LAG
) -> list[Finding]:
    out: list[Finding] = []
    by_id = states_by_id(states)
    for s in states:
        if not s.reachable:
            out.append(Finding(CRITICAL, "unreachable", s.node.address, s.error or "unreachable"))
        elif s.cluster_info.get("cluster_state") != "ok":
            out.append(Finding(CRITICAL, "cluster_state", s.node.address,
                               f"cluster_state is {s.cluster_info.get('cluster_state', '?')} as seen from this node"))
    for node in topology.nodes:
        if node.is_failing:
            flag = "fail" if "fail" in node.flags else "fail?"
            out.append(
                Finding(
                    CRITICAL,
                    "node_failing",
                    node.address,
                    f"{node.role} {node.short_id} is flagged {flag}; bring it back or remove it (CLUSTER FORGET)",
                )
            )
    gaps = topology.uncovered_slots()
    if gaps:
        total = sum(g.count for g in gaps)
        shown = ", ".join(str(g) for g in gaps[:5])
        out.append(
            Finding(CRITICAL, "slots_uncovered", "cluster", f"{total} slots not served by a healthy master: {shown}")
        )
    for node, slot in topology.open_slots():
        out.append(
            Finding(
                CRITICAL,
                "open_slot",
                node.address,
                f"slot {slot.slot} is {slot.direction} ({slot.peer_id[:8]}); finish it with redis-cli --cluster fix",
            )
        )
    reference = topology.slot_owners()
    agrees: dict[int, bool] = {id(topology): True}  # by view object: a view shared by many states is compared once
    for s in states:
        if not s.reachable or s.view is None:
            continue
        if id(s.view) not in agrees:
            agrees[id(s.view)] = s.view.slot_owners() == reference
        if not agrees[id(s.view)]:
            out.append(
                Finding(
                    CRITICAL,
                    "slot_map_disagrees",
                    s.node.address,
                    "this node's slot map differs from the seed's; wait for gossip to converge or investigate",
                )
            )
    for shard in topology.shards:
        out.extend(_replica_findings(shard, by_id, max_lag))
    return out


def _replica_findings(shard: Shard, by_id: dict[str, NodeState], max_lag: int) -> list[Finding]:
    if not shard.replicas:
        return [Finding(CRITICAL, "no_replica", shard.master.address, "master has no replica")]
    eligible, reasons = eligible_replicas(shard, by_id, max_lag)
    if eligible:
        return []
    return [Finding(CRITICAL, "no_synced_replica", shard.master.address,
                    "no replica in sync: " + "; ".join(reasons))]


def node_findings(state: NodeState, has_data_dir_override: bool = False) -> list[Finding]:
    if not state.reachable:
        return []
    addr, cfg, out = state.node.address, state.config, []
    if state.config_error:
        sev = INFO if has_data_dir_override else WARNING
        out.append(Finding(sev, "config_unavailable", addr,
                           f"{state.config_error}; set data_dir for this node in the inventory"))
    else:
        out.extend(_config_findings(addr, cfg))
    out.extend(_fork_findings(state))
    return out


def _config_findings(addr: str, cfg: Mapping[str, str]) -> list[Finding]:
    out = []
    data_dir = cfg.get("dir", "")
    if not data_dir.startswith("/"):
        out.append(Finding(CRITICAL, "dir_relative", addr,
                           f"dir is {data_dir!r}, not absolute: dumps land wherever the server started; "
                           "set an absolute dir in redis.conf (CONFIG SET dir /abs/path; CONFIG REWRITE)"))
    if cfg.get("rdbchecksum", "yes") != "yes":
        out.append(Finding(WARNING, "rdbchecksum_off", addr, "rdbchecksum no: backups cannot be checked by CRC64"))
    save = cfg.get("save", "")
    out.append(Finding(INFO, "config", addr, "; ".join((
        f"dir {data_dir}", f"dbfilename {cfg.get('dbfilename', '?')}",
        f"cluster-config-file {cfg.get('cluster-config-file', '?')}",
        f"appendonly {cfg.get('appendonly', '?')}", f"save {save!r}" if save else "no save points",
        f"stop-writes-on-bgsave-error {cfg.get('stop-writes-on-bgsave-error', '?')}"))))
    return out


def _fork_findings(state: NodeState) -> list[Finding]:
    addr, out = state.node.address, []
    used = state.int_info("used_memory")
    total = state.int_info("total_system_memory")
    maxmemory = state.int_info("maxmemory")
    if total and used * 2 > total:
        out.append(Finding(WARNING, "fork_headroom", addr,
                           f"used_memory {used} is over half of total_system_memory {total}: a BGSAVE fork's "
                           "copy-on-write can exhaust memory"))
    if maxmemory and used > maxmemory * 0.9:
        out.append(
            Finding(WARNING, "near_maxmemory", addr, f"used_memory {used} is within 10% of maxmemory {maxmemory}")
        )
    fork_usec = state.int_info("latest_fork_usec")
    if fork_usec > SLOW_FORK_USEC:
        out.append(Finding(WARNING, "slow_fork", addr, f"latest_fork_usec {fork_usec}: forks stall this node"))
    if state.int_info("rdb_bgsave_in_progress"):
        out.append(Finding(WARNING, "bgsave_running", addr, "a BGSAVE is running now"))
    if state.int_info("aof_rewrite_in_progress"):
        out.append(Finding(WARNING, "aof_rewrite_running", addr, "an AOF rewrite is running now"))
    if state.info.get("rdb_last_bgsave_status", "ok") != "ok":
        out.append(Finding(WARNING, "last_bgsave_failed", addr, "the last BGSAVE failed; see the node's log"))
    return out


def pin_findings(states: tuple[NodeState, ...], pins: dict[str, tuple[dict[str, str], str]],
                 seed: str, running: str | None = None) -> list[Finding]:
    """Settings an AOF backup pinned and never put back (pins: address -> (originals, who pinned and when)),
    and `appendfsync no` on an AOF node with no record (someone set it: a warning, not ours to undo).
    `running` describes a live run-lock holder: its pins are expected while it runs (a warning, not critical)."""
    out = []
    for s in states:
        if not s.reachable or s.config_error:
            continue
        addr = s.node.address
        if addr in pins:
            originals, who = pins[addr]
            differ = {k: v for k, v in originals.items() if s.config.get(k) not in (None, v)}
            if differ:
                shown = ", ".join(f"{k} is {s.config.get(k)!r} (original {v!r})" for k, v in sorted(differ.items()))
                if running:
                    out.append(Finding(WARNING, "settings_pinned", addr, f"{shown}: {who}; a run is under way "
                                       f"({running}): it puts them back when it ends"))
                else:
                    out.append(Finding(CRITICAL, "settings_pinned", addr,
                                       f"{shown}: {who} and never put back; run `clusterbak unpin --seed {seed}`"))
            else:
                out.append(Finding(INFO, "pin_record_stale", addr,
                                   f"a pin record ({who}) remains but the settings are back; "
                                   f"`clusterbak unpin --seed {seed}` removes it"))
            continue
        if s.config.get("appendonly") == "yes" and s.config.get("appendfsync") == "no":
            out.append(Finding(WARNING, "appendfsync_no", addr,
                               "appendonly yes with appendfsync no: a crash loses up to ~30 s of acknowledged "
                               "writes; CONFIG SET appendfsync everysec unless this is intended"))
    return out


def leftover_findings(address: str, files: list[tuple[str, int]], saving: bool) -> list[Finding]:
    """Redis's own temp files left by a killed save or rewrite child (temp-*.rdb, temp-rewriteaof-*.aof)."""
    if not files:
        return []
    total = sum(size for _, size in files)
    names = ", ".join(path for path, _ in files[:4]) + (f" (+{len(files) - 4} more)" if len(files) > 4 else "")
    if saving:
        return [Finding(INFO, "temp_files", address, f"{names}: a save or rewrite is running now; not judged")]
    return [Finding(WARNING, "temp_leftovers", address,
                    f"{len(files)} Redis temp file(s), {total} bytes, left by a killed save/rewrite child: {names}; "
                    "no save or rewrite is running on this node, so they can be deleted")]
