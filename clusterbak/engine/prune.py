"""`prune`: the retention policy applied to a repository's sets (plan/prune.py decides), each set the policy drops
asked for an Object Lock first, then the deletes."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from clusterbak.model.retention import Retention
from clusterbak.plan.prune import Candidate, PruneDecision, plan_prune
from clusterbak.storage.repository import Repository, SetEntry


@dataclass(frozen=True, slots=True)
class PreparedPrune:
    entries: dict[str, SetEntry]  # by backup id
    decisions: list[PruneDecision]

    @property
    def doomed(self) -> list[PruneDecision]:
        return [d for d in self.decisions if d.action == "delete"]


def prepare_prune(store: Repository, policy: Retention) -> PreparedPrune:
    """Which sets the policy keeps and deletes, and why. Every set it drops is asked for an Object Lock first,
    before anything is deleted: a locked set is kept (and says why), so prune never stops half-way on a delete the
    store refuses."""
    entries = {e.backup_id: e for e in store.entries()}
    assert policy.keep_last is not None  # merge() fills in every rule (flags, config file, defaults)
    decisions = plan_prune([Candidate(e.backup_id, e.status, e.created_at, e.verified) for e in entries.values()],
                           time.time(), policy.keep_last, policy.keep_daily, policy.keep_weekly,
                           policy.partial_grace_hours * 3600)
    locked = {d.backup_id: why for d in decisions if d.action == "delete"
              and (why := store.lock_of(entries[d.backup_id])) is not None}
    decisions = [replace(d, action="keep", rule="locked", reason=f"{locked[d.backup_id]} (policy: {d.reason})")
                 if d.backup_id in locked else d for d in decisions]
    return PreparedPrune(entries, decisions)


def run_prune(store: Repository, prepared: PreparedPrune) -> list[str]:
    """Delete the sets the plan drops; their ids."""
    doomed = prepared.doomed
    for d in doomed:
        store.delete(prepared.entries[d.backup_id])
    return [d.backup_id for d in doomed]
