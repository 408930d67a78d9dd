"""Issue 13's defects, each as the operator meets it: cron, a log, an 80-column terminal, a typo."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import redis
import typer

from clusterbak.cli.app import app
from clusterbak.lab.procs import free_base_port, start_standalone, stop_pid
from tests.integration.conftest import Cli

CLUSTERBAK = [sys.executable, "-m", "clusterbak"]


@pytest.fixture(scope="module")
def shared_set(lab, tmp_path_factory):
    """One uncompressed backup of the shared lab; tests that damage it work on a copy."""
    dest = tmp_path_factory.mktemp("sets")
    result, doc = Cli().json("backup", "--seed", lab.seed, "--inventory", lab.inventory, "--dest", str(dest),
                             "--compress", "none")
    assert result.exit_code == 0, doc["errors"]
    return dest, doc["data"]["backup_id"]


def copy_set(shared_set, tmp_path) -> tuple[Path, str]:
    dest, backup_id = shared_set
    shutil.copytree(dest, tmp_path / "sets")
    return tmp_path / "sets", backup_id


def rdb_saves(port: int) -> int:
    return int(redis.Redis(port=port).info("persistence")["rdb_saves"])


# 1 ---------------------------------------------------------------------------------------------------------------
def test_drill_leaves_nothing_behind_names_nodes_and_takes_base_port(lab, cli, shared_set, tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the drill's temp dir goes
    dest, backup_id = shared_set
    base = free_base_port(6)
    result = cli("drill", backup_id, "--dest", str(dest), "--base-port", str(base))
    assert result.exit_code == 0, result.output
    assert list(scratch.iterdir()) == []  # no clusterbak-drill-* dir, no copy of any dump
    for port in range(base, base + 6):  # the drill's lab ran on --base-port; progress names every node, with bytes
        assert re.search(rf"127\.0\.0\.1:{port}: started .* ([\d.]+)/\1 kB", result.stderr), result.stderr
    assert "lab removed" in result.stdout.splitlines()[-1]
    # the result is recorded beside the set, for `check --dest`
    assert json.loads((dest / backup_id / "drill.json").read_text())["ok"] is True


def test_drill_of_a_damaged_set_leaves_nothing_and_keep_says_where(lab, cli, shared_set, tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    dest, backup_id = copy_set(shared_set, tmp_path)
    manifest = json.loads((dest / backup_id / "manifest.json").read_text())
    victim = dest / backup_id / manifest["shards"][0]["file"]["path"]
    victim.write_bytes(victim.read_bytes()[:-100])
    result, doc = cli.json("drill", backup_id, "--dest", str(dest))
    assert result.exit_code == 4
    assert list(scratch.iterdir()) == []
    assert json.loads((dest / backup_id / "drill.json").read_text())["ok"] is False


# 2 ---------------------------------------------------------------------------------------------------------------
def test_check_is_critical_when_the_ssh_host_key_changed(make_lab, cli, tmp_path):
    handle = make_lab(ssh=True)
    known = Path(handle.lab.sshd["known_hosts"])
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    fake = " ".join(other.with_suffix(".pub").read_text().split()[:2])
    known.write_text(f"[127.0.0.1]:{handle.lab.sshd['port']} {fake}\n")
    result, doc = cli.json("check", "--seed", handle.seed, "--inventory", handle.inventory)
    assert result.exit_code == 3 and doc["data"]["ready"] is False
    critical = [f for f in doc["data"]["findings"] if f["severity"] == "critical"]
    assert critical and all(f["code"] == "transport_unusable" for f in critical)
    assert "host key CHANGED" in critical[0]["message"]


# 3 ---------------------------------------------------------------------------------------------------------------
def test_unusable_dest_is_refused_before_any_bgsave(lab, cli, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    replicas = [n.port for n in lab.lab.nodes if n.role == "replica"]
    before = {p: rdb_saves(p) for p in replicas}
    for dest, says in ((afile, "is a file, not a directory"), (afile / "sets", f"{afile} is a file")):
        result = cli("backup", "--seed", lab.seed, "--inventory", lab.inventory, "--dest", str(dest))
        assert result.exit_code == 3, result.output
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and says in errors[0] and "please report" not in result.stderr
    assert {p: rdb_saves(p) for p in replicas} == before


def test_read_only_dest_is_refused(lab, cli, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        result = cli("backup", "--seed", lab.seed, "--inventory", lab.inventory, "--dest", str(ro / "sets"))
    finally:
        subprocess.run(["umount", str(ro)], check=True)
    assert result.exit_code == 3 and "read-only filesystem" in result.stderr


# 4 ---------------------------------------------------------------------------------------------------------------
def test_list_of_a_missing_or_file_dest_is_an_error(cli, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for dest, says in ((tmp_path / "typo", "does not exist"), (afile, "is not a directory")):
        result, doc = cli.json("list", "--dest", str(dest))
        assert result.exit_code == 3 and says in doc["errors"][0]


# 5 ---------------------------------------------------------------------------------------------------------------
def test_lab_load_on_a_standalone_redis_is_refused(cli, tmp_path):
    port = free_base_port(1)
    pid = start_standalone(tmp_path, port)
    try:
        result, doc = cli.json("lab", "load", "--seed", f"127.0.0.1:{port}", "--keys", "10")
    finally:
        stop_pid(pid)
    assert result.exit_code == 3 and "not a reachable Redis Cluster node" in doc["errors"][0]


# 6 ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [("prune", "--dest", "/nowhere"),  # no policy at all
                                  ("prune", "--dest", "/nowhere", "--keep-last", "many"),  # bad value
                                  ("backup", "--dest", "/nowhere"),  # missing --seed/--inventory
                                  ("list", "--dest", "/x", "--bogus")])
def test_every_json_usage_error_prints_one_envelope(cli, args):
    result = cli(*args, "--json", env={"CLUSTERBAK_SEED": None, "CLUSTERBAK_INVENTORY": None})
    doc = json.loads(result.stdout)
    assert result.exit_code == 2 and doc["exit_code"] == 2 and doc["status"] == "usage_error"
    assert doc["command"] == args[0] and doc["errors"]
    assert result.stderr == ""


# 7 ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("columns", ["80", "120"])
def test_topology_never_cuts_addresses_or_ids(lab, cli, columns):
    result = cli("topology", "--seed", lab.seed, env={"COLUMNS": columns})
    _, doc = cli.json("topology", "--seed", lab.seed)
    assert result.exit_code == 0 and "…" not in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= int(columns)
    for node in doc["data"]["nodes"]:
        assert node["address"] in result.stdout and node["id"] in result.stdout


@pytest.mark.parametrize("columns", ["80", "120", "160"])
def test_restore_dry_run_shows_every_path_whole(lab, cli, shared_set, columns):
    dest, backup_id = shared_set
    result = cli("restore", backup_id, "--dest", str(dest), "--inventory", lab.inventory, "--dry-run",
                 env={"COLUMNS": columns})
    _, doc = cli.json("restore", backup_id, "--dest", str(dest), "--inventory", lab.inventory, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout
    for node in doc["data"]["plan"]["nodes"]:
        assert node["nodes_conf_path"] in result.stdout and node["rdb_path"] in result.stdout
        assert node["new_address"] in result.stdout


# 8 ---------------------------------------------------------------------------------------------------------------
def test_errors_are_one_plain_line_when_stderr_is_not_a_terminal(tmp_path):
    deep = tmp_path / ("a-rather-long-directory-name-" * 5) / "sets"
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    done = subprocess.run([*CLUSTERBAK, "list", "--dest", str(deep)], capture_output=True, text=True, env=env,
                          timeout=60)
    assert done.returncode == 3
    assert done.stderr.count("\n") == 1 and str(deep) in done.stderr and "\x1b[" not in done.stderr
    usage = subprocess.run([*CLUSTERBAK, "prune", "--dest", str(deep), "--keep-last", "x"], capture_output=True,
                           text=True, env=env, timeout=60)
    assert usage.returncode == 2 and usage.stderr.count("\n") == 1 and "╭" not in usage.stderr


# 9 ---------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigterm_during_a_backup_cleans_up_like_sigint(make_lab, tmp_path):
    handle = make_lab(keys=900)
    replicas = [n.port for n in handle.lab.nodes if n.role == "replica"]
    for port in replicas:  # ~300 keys per shard x 10 ms: BGSAVE takes ~3 s
        redis.Redis(port=port).config_set("rdb-key-save-delay", 10000)
    dest = tmp_path / "sets"
    proc = subprocess.Popen([*CLUSTERBAK, "backup", "--seed", handle.seed, "--inventory", handle.inventory,
                             "--dest", str(dest)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not list(dest.glob("*.partial")):
            time.sleep(0.05)
        assert list(dest.glob("*.partial")), "the backup never started writing"
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        for port in replicas:
            redis.Redis(port=port).config_set("rdb-key-save-delay", 0)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert list(dest.iterdir()) == []  # no <id>.partial, no set


# 10 --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, says", [
    (("topology", "--seed", "127.0.0.1:1", "--cacert", "/x.pem"), "--cacert only apply with --tls"),
    (("rolling-restart", "--seed", "127.0.0.1:1", "--inventory", "/x", "--replicas-only", "--force-failover"),
     "--replicas-only and --force-failover cannot be used together"),
    (("lab", "up", "--docker", "--ssh", "--dir", "/nonexistent-lab"), "--docker and --ssh cannot be used together"),
    (("prune", "--dest", "/x", "--keep-last", "1", "--dry-run", "--yes"), "--dry-run and --yes"),
    (("restore", "x", "--dest", "/x", "--inventory", "/x", "--dry-run", "--yes"), "--dry-run and --yes"),
    (("rolling-restart", "--seed", "127.0.0.1:1", "--inventory", "/x", "--dry-run", "--yes"), "--dry-run and --yes"),
])
def test_conflicting_flags_are_refused(cli, args, says):
    result, doc = cli.json(*args)
    assert result.exit_code == 2 and says in doc["errors"][0]


# 11 --------------------------------------------------------------------------------------------------------------
def test_map_to_an_address_missing_from_the_inventory_says_so(lab, cli, shared_set):
    dest, backup_id = shared_set
    old = lab.lab.nodes[0].address
    new = f"127.0.0.1:{free_base_port(1)}"
    result, doc = cli.json("restore", backup_id, "--dest", str(dest), "--inventory", lab.inventory, "--dry-run",
                           "--map", f"{old}={new}")
    assert result.exit_code == 3
    line = next(x for x in doc["errors"] if new in x)
    assert f"node {new} is the restore target of {old} but not in the inventory" in line
    assert "is in the cluster" not in line


# 12 --------------------------------------------------------------------------------------------------------------
def test_verify_says_truncated_with_sizes(cli, shared_set, tmp_path):
    dest, backup_id = copy_set(shared_set, tmp_path)
    manifest = json.loads((dest / backup_id / "manifest.json").read_text())
    victim = dest / backup_id / manifest["shards"][1]["file"]["path"]
    size = victim.stat().st_size
    victim.write_bytes(victim.read_bytes()[: size // 2])
    result, doc = cli.json("verify", backup_id, "--dest", str(dest))
    assert result.exit_code == 4
    (line,) = doc["errors"]
    assert line == f"{victim}: truncated ({size // 2} of {size} bytes)"
    assert json.loads((dest / backup_id / "verify.json").read_text())["ok"] is False


# 13 --------------------------------------------------------------------------------------------------------------
def test_list_shows_a_set_with_a_missing_shard_file_as_damaged(cli, shared_set, tmp_path):
    dest, backup_id = copy_set(shared_set, tmp_path)
    manifest = json.loads((dest / backup_id / "manifest.json").read_text())
    (dest / backup_id / manifest["shards"][2]["file"]["path"]).unlink()
    result, doc = cli.json("list", "--dest", str(dest))
    (row,) = doc["data"]["sets"]
    assert row["status"] == "damaged" and manifest["shards"][2]["file"]["path"] in row["problem"]


def test_show_lists_files_and_offsets(cli, shared_set):
    dest, backup_id = shared_set
    manifest = json.loads((dest / backup_id / "manifest.json").read_text())
    result = cli("show", backup_id, "--dest", str(dest), env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for shard in manifest["shards"]:
        assert shard["file"]["path"] in result.stdout
        assert f"{shard['source_repl_offset']} / {shard['master_repl_offset']}" in result.stdout
    for node in manifest["nodes"]:
        assert node["nodes_conf"]["path"] in result.stdout


def test_a_second_lab_down_is_not_an_error(cli, tmp_path):
    result = cli("lab", "down", "--dir", str(tmp_path / "never-up"))
    assert result.exit_code == 0 and "nothing to stop" in result.stdout


def test_help_has_metavars_and_text_for_every_option(cli):
    command = typer.main.get_command(app)
    from clusterbak.cli.entry import _tidy_help

    _tidy_help(command)
    missing = []

    def walk(cmd, path):
        for param in cmd.params:
            if param.param_type_name == "option" and not param.help and "--help" not in param.opts:
                missing.append(f"{path} {param.opts[0]}")
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(command, "clusterbak")
    assert missing == []
    for args in (["backup"], ["restore"], ["drill"], ["check"], ["prune"], ["lab", "up"], ["rolling-restart"]):
        out = cli(*args, "--help", env={"COLUMNS": "120"}).stdout
        assert "<bool>" not in out and "<str>" not in out, args


@pytest.mark.slow
def test_sigterm_during_a_drill_stops_its_lab_and_removes_its_files(lab, shared_set, tmp_path):
    dest, backup_id = shared_set
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.Popen([*CLUSTERBAK, "drill", backup_id, "--dest", str(dest)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(scratch)})
    pids = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(scratch.glob("*/lab.json")):
            time.sleep(0.02)
        (state,) = list(scratch.glob("*/lab.json"))
        pids = [n["pid"] for n in json.loads(state.read_text())["nodes"]]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert list(scratch.iterdir()) == []
    for pid in pids:  # the drill's redis-servers are gone too
        assert not Path(f"/proc/{pid}").exists() or "redis" not in Path(f"/proc/{pid}/cmdline").read_text()
    # ... including one being started when the signal came (not in lab.json yet: only its own start knew it)
    assert servers_working_in(scratch) == []


def servers_working_in(directory: Path) -> list[str]:
    out = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and "redis" in (proc / "cmdline").read_text() and \
                    os.readlink(proc / "cwd").startswith(str(directory)):
                out.append(f"{proc.name} {os.readlink(proc / 'cwd')}")
        except OSError:
            continue
    return out
