"""The per-node action of a rolling upgrade, and each node's server version read before and after.

The upgrade command runs on the CONTROL HOST (`sh -c`), like the deploy tool an operator would call there
(`ansible-playbook -l {host} upgrade-redis.yml`, or the fleet lab's `upgrade-node` that recreates the node's
container from another image with the same volume and address). The rolling engine then waits, as after a
restart, for the node to answer with a new run_id and to be an in-sync replica of the expected master.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import redis

from clusterbak.errors import StepFailed
from clusterbak.model.versions import ServerVersion
from clusterbak.plan.rolling import Step
from clusterbak.redisops.connect import ConnectionOptions, make_client

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


def read_versions(conn: ConnectionOptions, addresses: list[str]) -> dict[str, str | None]:
    """address -> "redis 7.0.15" / "valkey 8.1.1" from INFO server now; None when it does not answer."""
    out: dict[str, str | None] = {}
    for address in addresses:
        host, port = address.rsplit(":", 1)
        client = make_client(conn, host, int(port))
        try:
            sv = ServerVersion.from_info(client.info("server"))
            out[address] = sv.text if sv else None
        except (redis.RedisError, OSError):
            out[address] = None
        finally:
            client.close()
    return out
