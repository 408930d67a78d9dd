"""Damaged sets (a flipped byte, a truncated file, a deleted manifest) -> verify / list / prune / show / restore."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .common import backup


def one_line_naming(line: str, path: Path) -> None:
    assert "\n" not in line and line.count(str(path)) == 1, line  # the path once, not twice


def test_verify_records_its_result_and_prune_keeps_the_newest_verified_set(lab, cli, tmp_path):
    dest = tmp_path / "sets"
    ids = []
    for _ in range(2):
        result, doc = backup(cli, lab, dest, "--compress", "none")
        assert result.exit_code == 0, doc["errors"]
        ids.append(doc["data"]["backup_id"])
        time.sleep(1.1)
    intact, flipped = ids
    result, doc = cli.json("verify", intact, "--dest", str(dest))
    assert result.exit_code == 0
    record = json.loads((dest / intact / "verify.json").read_text())
    assert record["ok"] is True and record["problems"] == [] and abs(record["verified_at"] - time.time()) < 60
    manifest = json.loads((dest / flipped / "manifest.json").read_text())
    victim = dest / flipped / manifest["shards"][1]["file"]["path"]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    result, doc = cli.json("verify", flipped, "--dest", str(dest))
    assert result.exit_code == 4 and len(doc["errors"]) == 1
    one_line_naming(doc["errors"][0], victim)
    assert json.loads((dest / flipped / "verify.json").read_text())["ok"] is False
    result, listing = cli.json("list", "--dest", str(dest))
    state = {s["backup_id"]: (s["status"], s["verified"]) for s in listing["data"]["sets"]}
    assert state == {intact: ("complete", True), flipped: ("complete", False)}
    result, doc = cli.json("prune", "--dest", str(dest), "--keep-last", "1", "--dry-run")
    decisions = {d["backup_id"]: (d["action"], d["reason"]) for d in doc["data"]["decisions"]}
    assert decisions[intact] == ("keep", "newest verified")  # kept though --keep-last 1 and older
    # not a keeper (it did not take the one --keep-last slot), kept only until a newer good set exists
    assert decisions[flipped] == ("keep", "failed verification: not a keeper, but no newer good set exists")
    result, doc = cli.json("restore", flipped, "--dest", str(dest), "--inventory", lab.inventory, "--dry-run")
    assert result.exit_code == 4 and str(victim) in doc["errors"][0]
    one_line_naming(doc["errors"][0], victim)
    time.sleep(1.1)
    result, doc = backup(cli, lab, dest)
    newest = doc["data"]["backup_id"]
    assert cli("verify", newest, "--dest", str(dest)).exit_code == 0
    result, doc = cli.json("prune", "--dest", str(dest), "--keep-last", "1", "--yes")
    assert result.exit_code == 0 and sorted(doc["data"]["deleted"]) == sorted([intact, flipped])
    assert [p.name for p in dest.iterdir()] == [newest]


def test_a_truncated_file_and_a_deleted_manifest(lab, cli, tmp_path):
    dest = tmp_path / "sets"
    ids = []
    for _ in range(2):
        result, doc = backup(cli, lab, dest)
        assert result.exit_code == 0, doc["errors"]
        ids.append(doc["data"]["backup_id"])
        time.sleep(1.1)
    truncated, headless = ids
    manifest = json.loads((dest / truncated / "manifest.json").read_text())
    victim = dest / truncated / manifest["shards"][0]["file"]["path"]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    result, doc = cli.json("verify", truncated, "--dest", str(dest))
    assert result.exit_code == 4
    one_line_naming(doc["errors"][0], victim)
    (dest / headless / "manifest.json").unlink()
    gone = dest / headless / "manifest.json"
    for command in (("verify", headless, "--dest", str(dest)), ("show", headless, "--dest", str(dest)),
                    ("restore", headless, "--dest", str(dest), "--inventory", lab.inventory, "--dry-run"),
                    ("drill", headless, "--dest", str(dest))):
        result, doc = cli.json(*command)
        assert result.exit_code == 4, (command, doc["errors"])  # a damaged set: a failed step, not a usage error
        one_line_naming(doc["errors"][0], gone)
    result, listing = cli.json("list", "--dest", str(dest))
    state = {s["backup_id"]: (s["status"], s["verified"], s["problem"]) for s in listing["data"]["sets"]}
    assert state[truncated][:2] == ("complete", False)
    assert state[headless] == ("damaged", None, "manifest.json missing")
    result, doc = cli.json("prune", "--dest", str(dest), "--keep-last", "1", "--dry-run")
    decisions = {d["backup_id"]: d["action"] for d in doc["data"]["decisions"]}
    # the only complete set failed verification: not a keeper, but nothing better exists, so it stays
    assert decisions == {truncated: "keep", headless: "keep"}
