"""The restore journal: atomic, round-trips the plan that runs, and says the exact state of every node."""

from clusterbak.engine.restore_journal import Journal, RestoreJournal, journal_path, load_journal
from clusterbak.plan.restore import NodeRestore, RestorePlan


def node(address: str) -> NodeRestore:
    return NodeRestore(
        node_id=address[-4:] * 10,
        role="master",
        shard=0,
        old_address=address,
        new_address=address,
        new_cport=17000,
        data_dir="/d",
        rdb_path="/d/dump.rdb",
        nodes_conf_path="/d/nodes.conf",
        aof_dir=None,
        aof_base_name=None,
        aof_filename=None,
        nodes_conf_source="n",
        rewrite_nodes_conf=False,
        dump_source="s",
        dump_compression="zstd",
        stop="SHUTDOWN NOSAVE",
        start="start",
        replaces_keys=0,
    )


def test_journal_round_trip_and_state_of_every_node(tmp_path):
    plan = RestorePlan("B1", (node("h:7000"), node("h:7001"), node("h:7002")), (), ())
    path = journal_path(tmp_path / "inventory.toml")
    assert path == tmp_path / "inventory.restore.json"
    (tmp_path / f".{path.name}.tmp-1").write_text("{")  # a killed save
    j = Journal(path, RestoreJournal.new(plan, "/sets"))
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "the killed save's temp file is gone"
    j.mark("h:7000", stopped=True, placing=True)
    j.mark("h:7000", moved=[["/d/dump.rdb", "/d/dump.rdb.before-restore-B1"]], placed=True)
    j.mark("h:7001", stopped=True)
    j.mark(phase="placing")
    again = load_journal(path)
    assert again.restore_plan() == plan and again.phase == "placing"
    assert again.summary() == ("stopped, restored files in place: h:7000; stopped, its own files untouched: h:7001; "
                               "running, untouched: h:7002")
    j.remove()
    assert load_journal(path) is None and list(tmp_path.iterdir()) == []


def test_plan_steps_follow_from_what_its_nodes_get_and_survive_the_journal():
    from dataclasses import replace

    from clusterbak.plan.restore import STEP_KEYS, restore_step, restore_steps

    plain = RestorePlan("B1", (node("h:7000"),), (), ())
    assert [k for k, _ in restore_steps(plain.nodes)] == list(STEP_KEYS)
    assert restore_step(plain, "place").endswith("place its nodes.conf and dump")
    extras = RestorePlan("B1", (replace(node("h:7000"), config_path="/etc/r.conf", acl_path="/d/users.acl"),), (), ())
    assert restore_step(extras, "place").endswith("nodes.conf, dump, config file and users")
    aof = RestorePlan("B1", (replace(node("h:7000"), from_aof=True, aof_dir="/d/appendonlydir"),), (), ())
    assert restore_step(aof, "place").endswith("nodes.conf and AOF files")
    assert extras.to_dict()["steps"] == list(extras.steps)
    assert RestoreJournal.new(extras, "/sets").restore_plan().steps == extras.steps
