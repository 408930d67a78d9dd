"""Config files, users and modules: manifest records, masking, directive rewrites, and the restore planner's
module refusal from recorded MODULE LIST replies (no Redis module is packaged for this machine). Pure."""

from __future__ import annotations

import tomllib

import pytest

from clusterbak.model.inventory import parse_inventory
from clusterbak.model.manifest import ManifestError, parse_manifest
from clusterbak.model.nodeconfig import (
    MASK,
    acl_users,
    config_changes,
    parse_module_list,
    placed_edits,
    rewrite_directives,
    users_summary,
)
from clusterbak.plan.restore import TargetState, parse_maps, plan_restore
from tests.unit.manifest_docs import SHA, M, R, doc

# MODULE LIST as redis-py (decode_responses, RESP2) returned it from a Redis 7.2 node with RedisJSON + RediSearch
# loaded, and as a RESP3 client gets it
RECORDED_MODULE_LIST = [["name", "ReJSON", "ver", 20607, "path", "/usr/lib/redis/modules/rejson.so", "args", []],
                        ["name", "search", "ver", 20814, "path", "/usr/lib/redis/modules/redisearch.so", "args", []]]
RECORDED_RESP3 = [{b"name": b"ReJSON", b"ver": 20400, b"path": b"/m/rejson.so", b"args": []}]

STORED_CONF = """# tuned by the operator
port 6379
bind 10.0.0.1 127.0.0.1
dir /var/lib/redis/6379
pidfile /var/lib/redis/6379/redis.pid
logfile /var/log/redis.log
requirepass "s3cret-admin"
masterauth s3cret-admin
maxmemory-policy allkeys-lru
cluster-announce-ip 10.0.0.1
cluster-announce-bus-port 16379
user alice on >alice-pw ~app:* +get +set
rename-command CONFIG cfg-hidden-name
save 900 1
save 300 10
"""


def with_extras(**node0) -> dict:
    d = doc()
    d["nodes"][0].update(node0)
    return d


def test_node_records_read_into_types():
    d = with_extras(config_file={"path": "nodes/m.redis.conf", "sha256": SHA, "size": 9},
                    acl={"source": "acl-list", "path": "nodes/m.users.acl", "sha256": SHA, "size": 4},
                    modules=[{"name": "ReJSON", "ver": 20607, "path": "/x/rejson.so"}])
    m = parse_manifest(d, "sets/b1")
    conf = m.conf_of(M)
    assert conf.config.path == "nodes/m.redis.conf" and conf.acl_source == "acl-list"
    assert [f.path for f in conf.secret_files] == ["nodes/m.redis.conf", "nodes/m.users.acl"]
    assert m.modules()["ReJSON"].version == 20607
    assert "nodes/m.users.acl" in [f.path for f in m.stored_files()]
    assert m.conf_of(R).config is None and m.conf_of(R).modules is None  # an older set: nothing recorded


@pytest.mark.parametrize(("extra", "field"), [
    ({"config_file": {"path": "/etc/shadow", "sha256": SHA, "size": 1}}, "nodes[0].config_file.path"),
    ({"config_file": {"path": "nodes/../../x", "sha256": SHA, "size": 1}}, "nodes[0].config_file.path"),
    ({"acl": {"source": "aclfile", "path": "nodes/.acl", "sha256": SHA, "size": 1}}, "nodes[0].acl.path"),
    ({"acl": {"source": "guess", "path": "nodes/u.acl", "sha256": SHA, "size": 1}}, "nodes[0].acl.source"),
    ({"acl": {"source": "aclfile", "path": "nodes/m.conf", "sha256": SHA, "size": 1}}, "share one path"),
    ({"modules": [{"name": "../evil", "ver": 1}]}, "nodes[0].modules[0].name"),
    ({"modules": [{"name": "ReJSON", "ver": "new"}]}, "ver"),
    ({"config_file": {"path": "nodes/c", "sha256": SHA, "size": 1, "compression": "zstd"}}, "uncompressed"),
])
def test_crafted_node_records_are_refused_naming_the_field(extra, field):
    with pytest.raises(ManifestError, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_manifest(with_extras(**extra), "sets/b1")


def test_module_list_replies_parse_in_both_protocols():
    mods = parse_module_list(RECORDED_MODULE_LIST)
    assert [(m.name, m.version) for m in mods] == [("ReJSON", 20607), ("search", 20814)]
    assert parse_module_list(RECORDED_RESP3)[0].path == "/m/rejson.so"
    assert parse_module_list([]) == ()


def test_secrets_are_masked_in_diffs_and_user_summaries():
    current = STORED_CONF.replace("allkeys-lru", "noeviction").replace("s3cret-admin", "old-admin")
    changes = {c.directive: c for c in config_changes(current, STORED_CONF)}
    assert changes["maxmemory-policy"].before == "noeviction" and changes["maxmemory-policy"].after == "allkeys-lru"
    assert changes["requirepass"].after == f"{MASK} (changed)" and changes["masterauth"].before == MASK
    text = repr(changes) + repr(users_summary("user alice on #0123abcd ~* +@all\nuser bob on >bob-pw ~* +get"))
    renamed = config_changes(STORED_CONF.replace("cfg-hidden-name", "other-name"), STORED_CONF)
    assert [c.after for c in renamed] == ["CONFIG <secret> (changed)"]
    text += repr(renamed)
    for secret in ("s3cret-admin", "old-admin", "alice-pw", "0123abcd", "bob-pw", "cfg-hidden-name", "other-name"):
        assert secret not in text
    assert "user" not in changes  # same users on both sides: no row
    assert acl_users("user a on (~x* +get) >p")["a"] == ["on", "(~x* +get)", ">p"]


def test_a_moved_node_gets_its_address_and_layout_directives_rewritten_and_nothing_else():
    layout = {"dir": "/data/7001", "dbfilename": "dump.rdb", "cluster-config-file": "nodes-7001.conf"}
    edits = placed_edits(STORED_CONF, "10.0.0.1", 6379, "10.0.0.9", 7001, 17001, layout)
    assert edits["port"] == "7001" and edits["bind"] == "10.0.0.9 127.0.0.1"
    assert edits["cluster-announce-ip"] == "10.0.0.9" and edits["cluster-announce-bus-port"] == "17001"
    assert edits["dir"] == "/data/7001" and edits["pidfile"] == "/data/7001/redis.pid"
    assert "logfile" not in edits  # not inside the old data dir: the operator's path stays
    placed = rewrite_directives(STORED_CONF, edits)
    assert "maxmemory-policy allkeys-lru" in placed and "user alice on >alice-pw ~app:* +get +set" in placed
    assert placed.count("save ") == 2 and 'requirepass "s3cret-admin"' in placed
    same = placed_edits(STORED_CONF, "10.0.0.1", 6379, "10.0.0.1", 6379, 16379, {"dir": "/var/lib/redis/6379"})
    assert same == {}  # back home: the file is placed as it was


INV = '''[defaults]
transport = "local"
start_command = "start {port}"
[nodes."10.0.0.1:6379"]
data_dir = "/d1"
config_file = "/etc/redis/6379.conf"
[nodes."10.0.0.2:6379"]
data_dir = "/d2"
'''


def manifest_with_modules(modules):
    d = doc()
    for n in d["nodes"]:
        n["modules"] = modules
    return parse_manifest(d, "sets/b1")


def target(address, modules):
    return TargetState(address, True, None, 0, 1, {"dir": "/d"}, modules=modules)


def test_the_planner_refuses_a_target_without_the_sets_module_naming_it():
    inv = parse_inventory(tomllib.loads(INV), "inv.toml")
    m = manifest_with_modules([{"name": "ReJSON", "ver": 20607}])
    plain = {a: target(a, ()) for a in ("10.0.0.1:6379", "10.0.0.2:6379")}
    plan = plan_restore(m, inv, {}, plain)
    assert not plan.ok and all("ReJSON" in r for r in plan.refusals) and len(plan.refusals) == 2
    loaded = parse_module_list(RECORDED_MODULE_LIST)
    assert plan_restore(m, inv, {}, {a: target(a, loaded) for a in plain}).ok
    older = parse_module_list(RECORDED_RESP3)  # ReJSON 20400 < 20607
    plan = plan_restore(m, inv, {}, {a: target(a, older) for a in plain})
    assert any("older than the backup's 20607" in r for r in plan.refusals)
    down = plan_restore(m, inv, {}, {})  # stopped targets cannot be asked: a warning, not a refusal
    assert down.ok and any("ReJSON" in w and "cannot check" in w for w in down.warnings)


def test_with_config_needs_a_config_path_and_a_stored_file():
    inv = parse_inventory(tomllib.loads(INV), "inv.toml")
    m = parse_manifest(with_extras(config_file={"path": "nodes/m.redis.conf", "sha256": SHA, "size": 9}), "sets/b1")
    plan = plan_restore(m, inv, {}, {}, with_config=True, stored_configs={M: STORED_CONF})
    node = {n.new_address: n for n in plan.nodes}
    assert node["10.0.0.1:6379"].config_path == "/etc/redis/6379.conf"
    assert dict(node["10.0.0.1:6379"].config_edits)["dir"] == "/d1"
    assert any("10.0.0.2:6379" in r and "no config file" in r for r in plan.refusals)
    plan = plan_restore(m, inv, {}, {}, with_acl=True, stored_configs={})
    assert any("no users" in r for r in plan.refusals)
    moved = plan_restore(m, parse_inventory(tomllib.loads(INV + '[nodes."10.0.0.3:7000"]\ndata_dir = "/d3"\n'),
                                            "inv.toml"),
                         parse_maps(["10.0.0.1:6379=10.0.0.3:7000"]), {}, with_config=True,
                         stored_configs={M: STORED_CONF})
    assert any("10.0.0.3:7000" in r and "set config_file" in r for r in moved.refusals)


def test_drill_refuses_a_set_with_modules_before_it_starts_a_lab(tmp_path):
    import json

    from typer.testing import CliRunner

    from clusterbak.cli.app import app

    d = doc()
    d["nodes"][0]["modules"] = [{"name": "ReJSON", "ver": 20607, "path": "/m/rejson.so"}]
    (tmp_path / "b1").mkdir()
    (tmp_path / "b1" / "manifest.json").write_text(json.dumps(d))
    result = CliRunner().invoke(app, ["drill", "b1", "--dest", str(tmp_path), "--lab-dir", str(tmp_path / "lab"),
                                      "--json"])
    out = json.loads(result.stdout)
    assert result.exit_code == 3 and "ReJSON" in out["errors"][0] and "20607" in out["errors"][0]
    assert not (tmp_path / "lab").exists()  # refused before anything was started


def test_a_with_config_plan_survives_the_restore_journal_json_round_trip():
    import json
    from dataclasses import asdict

    from clusterbak.plan.restore import NodeRestore

    inv = parse_inventory(tomllib.loads(INV), "inv.toml")
    m = parse_manifest(with_extras(config_file={"path": "nodes/m.redis.conf", "sha256": SHA, "size": 9}), "sets/b1")
    node = next(n for n in plan_restore(m, inv, {}, {}, with_config=True, stored_configs={M: STORED_CONF}).nodes
                if n.config_path)
    assert node.config_edits and node.config_changes
    again = NodeRestore(**json.loads(json.dumps(asdict(node))))
    assert again == node
