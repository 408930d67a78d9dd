"""The rolling-upgrade plan: the rolling restart's order with an upgrade command per node, and its refusals."""

import pytest

from clusterbak.errors import UsageError
from clusterbak.model.versions import ServerVersion
from clusterbak.plan.rolling import RESTART, plan_rolling
from clusterbak.plan.upgrade import is_upgrade, order_refusals, with_upgrade

from .test_plan_rolling import inventory, states, topo

CMD = "deploy --host {host} --port {port} --to 8.0"


def plan_for(nodes=()):
    t = topo("nodes_3x1.txt")
    return t, plan_rolling(t, states(t), inventory(t), nodes)


def test_every_restart_step_runs_the_upgrade_command_in_the_same_order():
    t, plan = plan_for()
    upgraded = with_upgrade(plan, CMD, inventory(t))
    assert [(s.action, s.address) for s in upgraded.steps] == [(s.action, s.address) for s in plan.steps]
    restarts = [s for s in upgraded.steps if s.action == RESTART]
    host, port = restarts[0].address.rsplit(":", 1)
    assert restarts[0].command == f"deploy --host {host} --port {port} --to 8.0"
    assert [s.phase for s in restarts[:3]] == ["replicas"] * 3 and "upgrade" in restarts[0].why


def test_unknown_placeholder_is_a_usage_error():
    _, plan = plan_for()
    with pytest.raises(UsageError, match=r"unknown placeholder \{version\}"):
        with_upgrade(plan, "up {version}", inventory(_))


def test_a_master_without_its_replicas_is_refused():
    t, plan = plan_for()
    master = t.shards[0].master
    _, only_master = plan_for((master.address,))
    refusals = order_refusals(with_upgrade(only_master, CMD, inventory(t)), {})
    assert refusals == (f"upgrading master {master.address} but not its replica(s) "
                        f"{t.shards[0].replicas[0].address} would leave them older than their master; "
                        "add them to --nodes",)
    assert order_refusals(with_upgrade(plan, CMD, inventory(t)), {}) == ()


def test_a_replica_already_older_than_its_master_is_refused():
    t, plan = plan_for()
    shard = t.shards[1]
    versions = {n.node_id: ServerVersion.from_text("redis 8.0.2") for n in t.nodes}
    versions[shard.replicas[0].node_id] = ServerVersion.from_text("redis 7.0.15")
    (why,) = order_refusals(plan, versions)
    assert why.startswith(f"{shard.replicas[0].address} runs redis 7.0.15, which cannot load the RDB of its master")
    versions[shard.replicas[0].node_id] = ServerVersion.from_text("valkey 8.1.1")  # newer format than 7.0's
    versions[shard.master.node_id] = ServerVersion.from_text("redis 7.0.15")
    assert order_refusals(plan, versions) == ()


def test_an_upgrade_plan_is_recognised_for_resume():
    t, plan = plan_for()
    assert is_upgrade(with_upgrade(plan, CMD, inventory(t))) and not is_upgrade(plan)
