"""The validated manifest reader and the placeholder rules (pure)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from clusterbak.errors import EXIT_STEP_FAILED, InventoryError
from clusterbak.model.inventory import parse_inventory
from clusterbak.model.manifest import ManifestError, parse_manifest
from clusterbak.redisops.connect import ConnectionOptions, tls_options
from tests.unit.manifest_docs import doc


def test_a_valid_manifest_reads_into_types():
    m = parse_manifest(doc(), "sets/b1", expect_id="b1")
    assert m.backup_id == "b1" and [s.file.path for s in m.shards] == ["shard-00.rdb.zst"]
    assert m.shard_of() == {"a" * 40: 0, "b" * 40: 0}
    assert m.conf_of("b" * 40).file.path == "nodes/r.conf"


def edit(path: str, value):
    d = doc()
    node = d
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if key.isdigit() else node[key]
    node[keys[-1]] = value
    return d


@pytest.mark.parametrize(("path", "value", "field"), [
    ("shards.0.file.path", "/etc/hostname", "shards[0].file.path"),
    ("shards.0.file.path", "../x", "shards[0].file.path"),
    ("shards.0.file.path", "a/../../x", "shards[0].file.path"),
    ("nodes.0.nodes_conf.path", "nodes/.hidden", "nodes[0].nodes_conf.path"),
    ("topology.nodes.0.id", "A" * 40, "topology.nodes[0].id"),
    ("topology.nodes.1.master_id", "x", "topology.nodes[1].master_id"),
    ("topology.nodes.0.address", "10.0.0.1", "topology.nodes[0].address"),
    ("topology.nodes.0.address", "10.0.0.1:6379;id", "topology.nodes[0].address"),
    ("shards.0.source.address", "h:0", "shards[0].source.address"),
    ("shards.0.file.compression", "gzip", "shards[0].file.compression"),
    ("shards.0.file.sha256", "zz", "shards[0].file.sha256"),
    ("format", 2, "format 2"),
    ("kind", "tar", "kind"),
    ("backup_id", "../b1", "backup_id"),
    ("seed", "x", "seed"),
])
def test_crafted_fields_are_refused_naming_the_set_and_the_field(path, value, field):
    with pytest.raises(ManifestError) as caught:
        parse_manifest(edit(path, value), "sets/b1")
    assert caught.value.exit_code == EXIT_STEP_FAILED
    assert str(caught.value).startswith("sets/b1/manifest.json: ") and field in str(caught.value)


def test_an_aof_record_may_only_name_bare_files_inside_its_folder():
    d = doc()
    d["kind"] = "aof"
    f = d["shards"][0].pop("file")
    d["shards"][0]["aof"] = {"filename": "appendonly.aof", "dirname": "appendonlydir", "folder": "shard-00.aof",
                             "manifest_name": "appendonly.aof.manifest",
                             "manifest_text": "file appendonly.aof.1.base.rdb seq 1 type b\n",
                             "files": [dict(f, path="shard-00.aof/appendonly.aof.1.base.rdb.zst",
                                            name="appendonly.aof.1.base.rdb", type="b", seq=1)]}
    assert parse_manifest(d, "s").shards[0].aof.files[0].name == "appendonly.aof.1.base.rdb"
    for key, value in (("manifest_name", "/tmp/x.sh"), ("manifest_name", "../m"), ("filename", "a b")):
        bad = doc() | {}
        bad = __import__("copy").deepcopy(d)
        bad["shards"][0]["aof"][key] = value
        with pytest.raises(ManifestError, match=key):
            parse_manifest(bad, "s")
    bad = __import__("copy").deepcopy(d)
    bad["shards"][0]["aof"]["files"][0]["name"] = "/tmp/x.sh"
    bad["shards"][0]["aof"]["manifest_text"] = "file /tmp/x.sh seq 1 type b\n"
    with pytest.raises(ManifestError, match="name"):
        parse_manifest(bad, "s")
    bad = __import__("copy").deepcopy(d)
    bad["shards"][0]["aof"]["files"][0]["path"] = "elsewhere/appendonly.aof.1.base.rdb.zst"
    with pytest.raises(ManifestError, match="not inside the shard's folder"):
        parse_manifest(bad, "s")


INV = '''[defaults]
transport = "local"
restart_command = "svc restart --dir {data_dir} --id {node_id} --port {port} --host {host}"
[nodes."10.0.0.1:6379"]
'''


def test_placeholders_are_checked_and_quoted():
    node = parse_inventory(tomllib.loads(INV), "inv").nodes[0]
    hostile = "/var/lib/redis/it's $(touch x) \"q\""
    cmd = node.command("restart_command", "a" * 40, hostile)
    assert cmd == ("svc restart --dir '/var/lib/redis/it'\"'\"'s $(touch x) \"q\"' --id " + "a" * 40
                   + " --port 6379 --host 10.0.0.1")
    for node_id, data_dir in (("a" * 39 + ";", "/d"), ("a" * 40, "relative/dir"), ("a" * 40, "/d/\nx"),
                              ("a" * 40, "/d/../etc")):
        with pytest.raises(InventoryError, match="cannot be filled in"):
            node.command("restart_command", node_id, data_dir)


def test_inventory_paths_are_checked_when_read():
    with pytest.raises(InventoryError, match="data_dir"):
        parse_inventory(tomllib.loads(INV + 'data_dir = "relative"\n'), "inv")
    with pytest.raises(InventoryError, match="dbfilename"):
        parse_inventory(tomllib.loads(INV + 'dbfilename = "../x.rdb"\n'), "inv")


def test_tls_checks_are_explicit():
    opts = ConnectionOptions(seed="h:1", tls=True, cacert="ca.pem")
    assert tls_options(opts)["ssl_cert_reqs"] == "required" and tls_options(opts)["ssl_check_hostname"] is True
    insecure = tls_options(ConnectionOptions(seed="h:1", tls=True, tls_insecure=True))
    assert insecure["ssl_cert_reqs"] == "none" and insecure["ssl_check_hostname"] is False


def test_no_code_joins_a_manifest_path_without_the_validated_reader():
    """Paths from a set reach the filesystem only through storage.backupset.set_file / the typed manifest:
    no module indexes a raw manifest dict for a path, and no module outside the reader parses manifest.json."""
    root = Path(__file__).resolve().parents[2] / "clusterbak"
    raw_path = re.compile(r"""manifest\[["']|manifest\.get\(|\[["']nodes_conf["']\]""")
    offenders = []
    for file in root.rglob("*.py"):
        text = file.read_text()
        rel = file.relative_to(root).as_posix()
        if rel in ("model/manifest.py", "storage/backupset.py", "engine/backup.py", "engine/aof_backup.py",
                   "cli/render.py"):
            continue  # the reader itself; the writers; the printer (which only prints)
        for m in raw_path.finditer(text):
            offenders.append(f"{rel}: {m.group(0)}")
        if "manifest.json" in text and "json.load" in text:
            offenders.append(f"{rel}: reads manifest.json itself")
    assert not offenders, offenders


@pytest.mark.parametrize("line", [
    "../../../../tmp/x 127.0.0.1:7000@17000 master - 0 0 1 connected 0-16383",
    "a" * 40 + " 127.0.0.1/../x:7000@17000 master - 0 0 1 connected 0-16383",
    "a" * 40 + " 127.0.0.1:7000@17000 slave $(id) 0 0 1 connected",
])
def test_a_cluster_nodes_reply_with_hostile_ids_or_hosts_is_refused(line):
    from clusterbak.model.topology import TopologyParseError, parse_cluster_nodes

    with pytest.raises(TopologyParseError):
        parse_cluster_nodes(line + "\n")


def test_show_renders_a_valid_manifest_that_lacks_informational_fields(capsys):
    """A crafted set may pass the reader (nothing in it steers a path) yet lack what `show` prints: no crash."""
    from clusterbak.cli.render import Renderer

    m = parse_manifest(doc(), "sets/b1")
    Renderer(False).backup_summary(dict(m.raw))
    out = capsys.readouterr().out
    assert "10.0.0.2:6379" in out and "backup b1" in out


def test_phase_timings_and_cow_size_are_optional_and_typed():
    older = parse_manifest(doc(), "sets/b1")  # written before phases were timed: still reads
    assert older.shards[0].timings is None and older.shards[0].cow_bytes is None
    d = edit("shards.0.timings", {"wait_host_s": 0.0, "bgsave_s": 1.25, "transfer_s": 2, "fsync_s": 0.01})
    d["shards"][0]["save"]["rdb_last_cow_size"] = 4096
    d["timings"] = {"shards_s": 3.5, "node_files_s": 0.1}
    m = parse_manifest(d, "sets/b1")
    assert dict(m.shards[0].timings) == {"wait_host_s": 0.0, "bgsave_s": 1.25, "transfer_s": 2.0, "fsync_s": 0.01}
    assert m.shards[0].cow_bytes == 4096


@pytest.mark.parametrize(("path", "value", "field"), [
    ("shards.0.timings", {"bgsave_s": "soon"}, r"shards\[0\].timings.bgsave_s"),
    ("shards.0.timings", {"bgsave_s": -1}, r"shards\[0\].timings.bgsave_s"),
    ("shards.0.timings", {"../x": 1}, r"shards\[0\].timings"),
    ("shards.0.timings", [1, 2], r"shards\[0\].timings"),
    ("shards.0.save.rdb_last_cow_size", "4k", r"shards\[0\].save.rdb_last_cow_size"),
    ("timings", {"shards_s": True}, r"timings.shards_s"),
])
def test_bad_timings_are_refused_naming_the_field(path, value, field):
    with pytest.raises(ManifestError, match=field):
        parse_manifest(edit(path, value), "sets/b1")
