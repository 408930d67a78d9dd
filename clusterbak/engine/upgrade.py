"""The per-node action of a rolling upgrade, and each node's server version read before and after.

The upgrade command runs on the CONTROL HOST (`sh -c`), like the deploy tool an operator would call there
(`ansible-playbook -l {host} upgrade-redis.yml`, or the fleet lab's `upgrade-node` that recreates the node's
container from another image with the same volume and address). The rolling engine then waits, as after a
restart, for the node to answer with a new run_id and to be an in-sync replica of the expected master.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterable
from dataclasses import replace

from clusterbak.engine.rolling import Prepared
from clusterbak.errors import StepFailed
from clusterbak.model.inventory import Inventory
from clusterbak.model.versions import ServerVersion
from clusterbak.plan.rolling import Step
from clusterbak.plan.upgrade import order_refusals, with_upgrade
from clusterbak.redisops.connect import ConnectionOptions
from clusterbak.redisops.nodeinfo import server_versions

OUTPUT_TAIL = 400


def control_host_action(
    on_output: Callable[[str, str], None] = lambda address, text: None,
) -> Callable[[Step, float], None]:
    def act(step: Step, timeout: float) -> None:
        assert step.command is not None  # an upgrade step is a restart with the upgrade command
        try:
            done = subprocess.run(["sh", "-c", step.command], capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise StepFailed(f"{step.address}: the upgrade command did not finish within {timeout:.0f}s: "
                             f"{step.command}") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip()[-OUTPUT_TAIL:]
            raise StepFailed(f"{step.address}: the upgrade command exited {done.returncode}: {step.command}: "
                             f"{tail or 'no output'}")
        on_output(step.address, done.stdout.strip()[-OUTPUT_TAIL:])

    return act


def prepare_upgrade(
    prep: Prepared, template: str, inventory: Inventory, conn: ConnectionOptions
) -> tuple[Prepared, dict[str, str | None]]:
    """The plan with upgrade steps, its order refusals added; and every node's version now, by address."""
    plan = with_upgrade(prep.plan, template, inventory)
    before = server_versions(conn, [r.address for r in plan.roles])
    by_id = {r.node_id: ServerVersion.from_text(before.get(r.address) or "") for r in plan.roles}
    return replace(prep, plan=plan, refusals=prep.refusals + order_refusals(plan, by_id)), before


def versions_now(conn: ConnectionOptions, addresses: Iterable[str]) -> dict[str, str | None]:
    """Each node's server version as it answers now (None: unreachable), by address."""
    return server_versions(conn, list(addresses))
