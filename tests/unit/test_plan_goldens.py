"""Golden outputs of the backup and prune planners: the JSON a --dry-run prints, byte for byte.

A change to a planner's output shows here as a diff; if it is on purpose, `pytest --update-goldens` rewrites the
files under tests/unit/golden/ and the diff is reviewed with the change."""

from __future__ import annotations

import json
from dataclasses import asdict

from clusterbak.plan.backup import plan_backup
from clusterbak.plan.prune import Candidate, plan_prune
from tests.unit.test_plan_rolling import inventory, states, topo

DAY = 86400.0
NOW = 1_790_000_000.0  # a fixed "now": the plan depends on ages only


def dump(value: object) -> str:
    return json.dumps(value, indent=2, sort_keys=True) + "\n"


def test_backup_plan_3x1_from_replicas(golden):
    t = topo("nodes_3x1.txt")
    plan = plan_backup("20260101T000000Z", t, states(t), inventory(t))
    assert plan.ok
    golden("backup_plan_3x1.json", dump(plan.to_dict()))


def test_backup_plan_3x1_auto_aof_with_a_lagging_and_a_linkless_replica(golden):
    """--source auto --aof: one shard's replica lags (its master is used), another's link is down (refused reason
    kept), every node runs appendonly yes."""
    t = topo("nodes_3x1.txt")
    info = {n.address: {"aof_enabled": 1} for n in t.nodes}
    info["127.0.0.1:7105"]["master_link_status"] = "down"
    lagging = states(t, lag={"127.0.0.1:7104": 4096}, **info)
    plan = plan_backup("20260101T000000Z", t, lagging, inventory(t), source_mode="auto", max_lag=1024, aof=True)
    golden("backup_plan_3x1_auto_aof.json", dump(plan.to_dict()))


def test_prune_plan_of_a_month_of_sets(golden):
    sets = [Candidate(f"set-{d:02d}", "complete", NOW - d * DAY, "ok" if d % 3 else "never") for d in range(0, 30)]
    sets += [Candidate("set-failed", "complete", NOW - 1.5 * DAY, "failed"),
             Candidate("set-incomplete", "incomplete", NOW - 2.5 * DAY),
             Candidate("set-partial-old", "partial", NOW - 3 * DAY),
             Candidate("set-partial-new", "partial", NOW - 3600),
             Candidate("set-damaged", "damaged", NOW - 40 * DAY)]
    decisions = plan_prune(sets, NOW, keep_last=3, keep_daily=7, keep_weekly=4, partial_grace_s=24 * 3600)
    assert {d.backup_id for d in decisions} == {s.backup_id for s in sets}
    golden("prune_plan_month.json", dump([asdict(d) for d in decisions]))
