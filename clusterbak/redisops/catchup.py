"""Before a replica's BGSAVE: wait until it has applied every write its master had acknowledged when the shard's
turn came (its offset reached the master's, same replication id).

The planner's lag limit only picks the replica; it is not a guarantee. A busy or paused replica can keep its link
up while a whole shard's recent writes sit unapplied (a few hundred KB is a whole small dataset), and a BGSAVE there
is a short snapshot that verifies fine. Waiting here makes "saved on an in-sync replica" mean what it says.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from clusterbak.errors import RunCancelled, StepFailed

FIRST_POLL = 0.01
MAX_POLL = 0.2


@dataclass(frozen=True, slots=True)
class CatchUp:
    master_offset: int  # the master's master_repl_offset when the shard's turn came
    replica_offset: int  # the replica's slave_repl_offset once it had reached it
    waited_s: float
    replid: str | None = None  # the master's replication id the offsets count in


def wait_caught_up(master: redis.Redis, replica: redis.Redis, master_address: str, replica_address: str,
                   timeout: float, cancelled: Callable[[], bool] = lambda: False) -> CatchUp:
    """Poll the replica until it applied the master's stream up to the master's offset read now."""
    t0 = time.monotonic()
    mrepl = master.info("replication")
    target, replid = int(mrepl.get("master_repl_offset", 0)), mrepl.get("master_replid")
    poll, deadline = FIRST_POLL, t0 + max(timeout, 0.0)
    while True:
        repl = replica.info("replication")
        offset = int(repl.get("slave_repl_offset", -1))
        why = _not_caught_up(repl, offset, target, replid, master_address)
        if why is None:
            return CatchUp(target, offset, time.monotonic() - t0, replid)
        if cancelled():
            raise RunCancelled(f"{replica_address}: stopped waiting for it to catch up: the backup was cancelled")
        if time.monotonic() >= deadline:
            raise StepFailed(f"{replica_address}: {why} after {timeout:.0f}s, so a snapshot there would miss "
                             f"acknowledged writes; look at its load and replication link, raise --catch-up-timeout, "
                             "or back this shard up from its master (--source auto/master)")
        time.sleep(poll)
        poll = min(poll * 2, MAX_POLL)


def _not_caught_up(repl: dict, offset: int, target: int, replid: str | None, master_address: str) -> str | None:
    if repl.get("role") != "slave":
        return f"is no longer a replica (role {repl.get('role')})"
    if repl.get("master_link_status") != "up":
        return f"its link to {master_address} is {repl.get('master_link_status')}"
    if int(repl.get("master_sync_in_progress", 0) or 0):
        return "is in a full sync"
    if replid and repl.get("master_replid") != replid:
        return f"follows replication id {repl.get('master_replid')}, not {master_address}'s {replid}"
    if offset < target:
        return f"is still {target - offset} bytes behind {master_address} (offset {offset} of {target})"
    return None
