"""Rolling restart plan: replicas first, then per master CLUSTER FAILOVER -> restart -> failback. Pure.

(Topology, NodeStates, Inventory, options) -> RollingPlan, a list of JSON-able Steps. `--dry-run` prints
this plan and a real run executes exactly it; the resumable state file stores it as `to_dict()`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from clusterbak.errors import InventoryError, UsageError
from clusterbak.model.checks import DEFAULT_MAX_LAG
from clusterbak.model.gates import eligible_replicas
from clusterbak.model.inventory import Inventory
from clusterbak.model.state import NodeState, states_by_id
from clusterbak.model.topology import Node, Shard, Topology

RESTART, FAILOVER, FAILBACK = "restart", "failover", "failback"
FAILOVER_MODES = ("default", "force")


@dataclass(frozen=True, slots=True)
class Step:
    index: int
    phase: str  # "replicas" | "masters"
    action: str  # restart | failover | failback
    shard: int
    node_id: str  # the node restarted, or the replica CLUSTER FAILOVER is sent to
    address: str
    expect_master_id: str  # the shard's master once this step is done
    expect_master_address: str
    demote_id: str | None = None  # failover/failback: the master that becomes a replica
    demote_address: str | None = None
    command: str | None = None  # restart: the inventory's restart_command, placeholders filled in
    why: str = ""


@dataclass(frozen=True, slots=True)
class NodeRole:
    """One node's role when the plan was made: the state a run must end in."""

    node_id: str
    address: str
    role: str
    master_id: str | None
    shard: int


@dataclass(frozen=True, slots=True)
class ShardSlots:
    index: int
    master_id: str
    slots: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RollingPlan:
    steps: tuple[Step, ...]
    roles: tuple[NodeRole, ...]
    shards: tuple[ShardSlots, ...]
    targets: tuple[str, ...]  # addresses to restart, in plan order
    failover_mode: str = "default"
    max_lag: int = DEFAULT_MAX_LAG
    replicas_only: bool = False
    nodes: tuple[str, ...] = ()  # --nodes as given (empty: every node)
    refusals: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.refusals

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(raw: dict[str, Any]) -> RollingPlan:
        return RollingPlan(
            steps=tuple(Step(**s) for s in raw["steps"]), roles=tuple(NodeRole(**n) for n in raw["roles"]),
            shards=tuple(ShardSlots(s["index"], s["master_id"], tuple(s["slots"])) for s in raw["shards"]),
            targets=tuple(raw["targets"]), failover_mode=raw["failover_mode"], max_lag=raw["max_lag"],
            replicas_only=raw["replicas_only"], nodes=tuple(raw["nodes"]), refusals=tuple(raw["refusals"]),
            warnings=tuple(raw["warnings"]))

    def expected_owners(self, upto: int) -> dict[int, str]:
        """shard -> the node id that serves its slots once step `upto` is done."""
        owners = {s.index: s.master_id for s in self.shards}
        for step in self.steps[: upto + 1]:
            owners[step.shard] = step.expect_master_id
        return owners

    def expected_slot_map(self, upto: int) -> tuple[tuple[str, str], ...]:
        """The slot map every node must show after step `upto`, in Topology.slot_map() form."""
        return slot_map_for(self.shards, self.expected_owners(upto))


def slot_map_for(shards: tuple[ShardSlots, ...], owners: dict[int, str]) -> tuple[tuple[str, str], ...]:
    pairs = [(r, owners[s.index]) for s in shards for r in s.slots]
    return tuple(sorted(pairs, key=lambda p: int(p[0].split("-")[0])))


def choose_failover_replica(shard: Shard, by_id: dict[str, NodeState], max_lag: int) -> tuple[Node | None, str]:
    """The freshest in-sync replica of a master: (node, why), or (None, why not)."""
    eligible, reasons = eligible_replicas(shard, by_id, max_lag)
    if not eligible:
        return None, "no in-sync replica to fail over to: " + ("; ".join(reasons) or "the master has no replica")
    best = eligible[0]
    return best.node, f"freshest in-sync replica, {best.lag} bytes behind (of {len(eligible)} in sync)"


def restart_command(address: str, node_id: str, inventory: Inventory,
                    state: NodeState | None) -> tuple[str | None, str | None]:
    """(the inventory's restart_command for this node, placeholders filled in; why not)."""
    try:
        access = inventory.access(address)
    except InventoryError as exc:
        return None, str(exc)
    template = access.restart_command
    if template is None and access.transport == "docker":
        return f"docker restart {access.container}", None  # the docker transport does this through the Engine API
    if template is None:
        return None, (f"{inventory.source}: {address} has no restart_command; set one in [defaults] or "
                      f'[nodes."{address}"]')
    data_dir = access.data_dir or (state.config.get("dir") if state is not None else None) or ""
    if "{data_dir}" in template and not data_dir:
        return None, (f"{address}: restart_command uses {{data_dir}} but the data dir is unknown; "
                      "set data_dir for this node in the inventory")
    try:
        return access.command("restart_command", node_id=node_id, data_dir=data_dir), None
    except InventoryError as exc:
        return None, str(exc)


def refresh_commands(plan: RollingPlan, inventory: Inventory, states: tuple[NodeState, ...],
                     done: set[int]) -> tuple[RollingPlan, tuple[str, ...]]:
    """For --resume: the restart steps not done yet take their command from the inventory as it is now."""
    by_id = states_by_id(states)
    steps: list[Step] = []
    refusals: list[str] = []
    for step in plan.steps:
        if step.action == RESTART and step.index not in done:
            cmd, refusal = restart_command(step.address, step.node_id, inventory, by_id.get(step.node_id))
            if refusal:
                refusals.append(refusal)
            step = replace(step, command=cmd)
        steps.append(step)
    return replace(plan, steps=tuple(steps)), tuple(refusals)


def plan_rolling(topology: Topology, states: tuple[NodeState, ...], inventory: Inventory,
                 nodes: tuple[str, ...] = (), replicas_only: bool = False, max_lag: int = DEFAULT_MAX_LAG,
                 force_failover: bool = False) -> RollingPlan:
    by_id = states_by_id(states)
    shard_of = {n.node_id: i for i, s in enumerate(topology.shards) for n in s.nodes}
    known = {n.address for n in topology.nodes}
    unknown = [a for a in nodes if a not in known]
    if unknown:
        raise UsageError(f"--nodes {unknown[0]} is not a member of this cluster (members: {', '.join(sorted(known))})")
    wanted = set(nodes) if nodes else known
    refusals: list[str] = []
    warnings: list[str] = []
    if force_failover:
        warnings.append("--force-failover: CLUSTER FAILOVER FORCE does not wait for the replica to reach the "
                        "master's offset; acknowledged writes can be lost")
    mode = "force" if force_failover else "default"
    roles = tuple(NodeRole(n.node_id, n.address, n.role, n.master_id, shard_of.get(n.node_id, -1))
                  for n in topology.nodes)
    shards = tuple(ShardSlots(i, s.master.node_id, tuple(str(r) for r in s.slots))
                   for i, s in enumerate(topology.shards))
    for node in topology.nodes:
        if node.node_id not in shard_of:
            refusals.append(f"{node.address}: {node.role} belongs to no shard (its master is not a member)")

    def command(node: Node) -> str | None:
        cmd, refusal = restart_command(node.address, node.node_id, inventory, by_id.get(node.node_id))
        if refusal:
            refusals.append(refusal)
        return cmd

    steps: list[Step] = []

    def add(**kw: Any) -> None:
        steps.append(Step(index=len(steps), **kw))

    for i, shard in enumerate(topology.shards):
        for replica in shard.replicas:
            if replica.address in wanted:
                add(phase="replicas", action=RESTART, shard=i, node_id=replica.node_id, address=replica.address,
                    expect_master_id=shard.master.node_id, expect_master_address=shard.master.address,
                    command=command(replica), why=f"replica of {shard.master.address}: restart in place")
    for i, shard in enumerate(topology.shards):
        master = shard.master
        if master.address not in wanted:
            continue
        if replicas_only:
            if nodes:
                warnings.append(f"{master.address}: master skipped (--replicas-only)")
            continue
        if not master.slots:
            refusals.append(f"{master.address}: master serves no slots; restart it by hand or give it slots first")
            continue
        target, why = choose_failover_replica(shard, by_id, max_lag)
        if target is None:
            refusals.append(f"shard {i} master {master.address}: {why}")
            continue
        cmd = command(master)
        add(phase="masters", action=FAILOVER, shard=i, node_id=target.node_id, address=target.address,
            expect_master_id=target.node_id, expect_master_address=target.address, demote_id=master.node_id,
            demote_address=master.address, why=f"CLUSTER FAILOVER{' FORCE' if force_failover else ''} on {why}")
        add(phase="masters", action=RESTART, shard=i, node_id=master.node_id, address=master.address,
            expect_master_id=target.node_id, expect_master_address=target.address, command=cmd,
            why=f"old master, now a replica of {target.address}: restart")
        add(phase="masters", action=FAILBACK, shard=i, node_id=master.node_id, address=master.address,
            expect_master_id=master.node_id, expect_master_address=master.address, demote_id=target.node_id,
            demote_address=target.address, why="CLUSTER FAILOVER on the old master: take its role back")
    targets = tuple(dict.fromkeys(s.address for s in steps if s.action == RESTART))
    if not targets and not refusals:
        refusals.append("nothing to restart: --nodes/--replicas-only select no node")
    return RollingPlan(tuple(steps), roles, shards, targets, mode, max_lag, replicas_only, tuple(nodes),
                       tuple(dict.fromkeys(refusals)), tuple(warnings))


RESTORE_ROLES = "restore-roles"


@dataclass(frozen=True, slots=True)
class Reconciled:
    """What --resume makes of the live roles: steps to do again, or why it cannot go on."""

    rewind: tuple[int, ...]
    refusals: tuple[str, ...]


def reconcile(plan: RollingPlan, done: set[int], live: dict[int, str | None], restore_roles_cmd: str) -> Reconciled:
    """Compare who serves each shard now (`live`: shard -> node id, None when unclear) with what the state file
    expects before its first unfinished step. A shard served by the node expected before or after that step
    is fine (a failover that went through late is confirmed by the step). A shard given back to its recorded
    master between its failover and the restart has that failover done again. Anything else refuses, naming
    the shard: --restore-roles gives every master its recorded role, then --resume goes on."""
    idx = next((s.index for s in plan.steps if s.index not in done), None)
    if idx is None:
        return Reconciled((), ())
    step = plan.steps[idx]
    before, after = plan.expected_owners(idx - 1), plan.expected_owners(idx)
    address = {r.node_id: r.address for r in plan.roles}
    rewind: list[int] = []
    refusals: list[str] = []
    for shard in plan.shards:
        now = live.get(shard.index)
        if now is not None and now in (before[shard.index], after[shard.index]):
            continue
        if (now is not None and now == shard.master_id and step.shard == shard.index and step.action == RESTART
                and step.phase == "masters"):
            rewind.extend(s.index for s in plan.steps if s.shard == shard.index and s.action == FAILOVER)
            continue
        served = "no clear master" if now is None else f"served by {address.get(now, now[:8])}"
        refusals.append(f"shard {shard.index} is {served}; the state file expects "
                        f"{address[before[shard.index]]} before step {idx + 1}: run `{restore_roles_cmd}` to give "
                        "every master its recorded role, then --resume")
    return Reconciled(tuple(rewind), tuple(refusals))


def plan_restore_roles(plan: RollingPlan, live: dict[int, str | None]) -> tuple[tuple[Step, ...], tuple[str, ...]]:
    """One CLUSTER FAILOVER per shard whose recorded master is not serving it now; refusals for unclear shards."""
    address = {r.node_id: r.address for r in plan.roles}
    steps: list[Step] = []
    refusals: list[str] = []
    for shard in plan.shards:
        now = live.get(shard.index)
        if now == shard.master_id:
            continue
        if now is None:
            refusals.append(f"shard {shard.index}: who serves it is unclear; wait until `clusterbak topology` shows "
                            "one master for it (start a stopped node), then try again")
            continue
        steps.append(Step(index=len(steps), phase=RESTORE_ROLES, action=FAILBACK, shard=shard.index,
                          node_id=shard.master_id, address=address[shard.master_id],
                          expect_master_id=shard.master_id, expect_master_address=address[shard.master_id],
                          demote_id=now, demote_address=address.get(now, now),
                          why=f"recorded master of shard {shard.index}: take its role back from {address.get(now)}"))
    return tuple(steps), tuple(refusals)
