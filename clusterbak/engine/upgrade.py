"""The per-node action of a rolling upgrade, and each node's server version read before and after.

The upgrade command runs on the CONTROL HOST (`sh -c`), like the deploy tool an operator would call there
(`ansible-playbook -l {host} upgrade-redis.yml`, or the fleet lab's `upgrade-node` that recreates the node's
container from another image with the same volume and address). The rolling engine then waits, as after a
restart, for the node to answer with a new run_id and to be an in-sync replica of the expected master.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable

from clusterbak.errors import StepFailed
from clusterbak.plan.rolling import Step

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
