"""Rolling upgrade: a rolling-restart plan whose restart steps run a per-node upgrade command instead. Pure.

The order is the rolling restart's (replicas first; then per master: CLUSTER FAILOVER to an upgraded replica,
upgrade the old master, resync, fail back), which is the one order that never leaves a replica on an older
version than its master at the end of a step: an older replica cannot load the newer master's RDB in a full
sync. What this module adds: the upgrade command in every restart step (so --dry-run prints it), and refusals
for selections or clusters that would break that rule.
"""

from __future__ import annotations

import string
from dataclasses import replace

from clusterbak.errors import UsageError
from clusterbak.model.inventory import PLACEHOLDERS, Inventory
from clusterbak.model.versions import ServerVersion, rdb_written
from clusterbak.plan.rolling import RESTART, RollingPlan


def with_upgrade(plan: RollingPlan, template: str, inventory: Inventory) -> RollingPlan:
    """Every restart step runs `template` (on the control host), its placeholders filled in as the inventory fills
    a restart_command's: the same names, each value checked and shell-quoted."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise UsageError(f"--upgrade-command: {exc}") from None
    unknown = names - PLACEHOLDERS
    if unknown:
        raise UsageError(f"--upgrade-command uses unknown placeholder {{{sorted(unknown)[0]}}}; allowed: "
                         + ", ".join("{" + p + "}" for p in sorted(PLACEHOLDERS)))
    steps = []
    for step in plan.steps:
        if step.action == RESTART:
            access = replace(inventory.access(step.address), restart_command=template)
            step = replace(
                step,
                command=access.command("restart_command", node_id=step.node_id),
                why=step.why.replace(": restart", ": upgrade").replace("restart in place", "upgrade in place"),
            )
        steps.append(step)
    return replace(plan, steps=tuple(steps))


def order_refusals(plan: RollingPlan, versions: dict[str, ServerVersion | None]) -> tuple[str, ...]:
    """Why this upgrade may not start. `versions`: node id -> its server version read now (None: unknown)."""
    refusals = []
    targets = set(plan.targets)
    for role in plan.roles:
        if role.role != "master":
            continue
        replicas = [r for r in plan.roles if r.master_id == role.node_id]
        mine = versions.get(role.node_id)
        for r in replicas:
            theirs = versions.get(r.node_id)
            if mine and theirs and rdb_written(theirs) < rdb_written(mine):
                refusals.append(f"{r.address} runs {theirs.text}, which cannot load the RDB of its master "
                                f"{role.address} ({mine.text}): upgrade that replica first (--nodes {r.address})")
        if role.address in targets:
            left = [r.address for r in replicas if r.address not in targets]
            if left:
                refusals.append(f"upgrading master {role.address} but not its replica(s) {', '.join(left)} would "
                                f"leave them older than their master; add them to --nodes")
    return tuple(refusals)


def is_upgrade(plan: RollingPlan) -> bool:
    """A plan made by with_upgrade (its restart steps say so), e.g. the one in a state file to resume."""
    return any(s.action == RESTART and ("upgrade in place" in s.why or ": upgrade" in s.why) for s in plan.steps)
