"""check --dest (freshness, Barman-style) and --nagios, Prometheus textfile metrics, retention from a config file."""

from __future__ import annotations

import json
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families


def samples(path: Path) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(path.read_text()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(found: dict, name: str, **labels) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def backup(cli, lab, dest, *extra):
    result, doc = cli.json("backup", "--seed", lab.seed, "--inventory", lab.inventory, "--dest", str(dest), *extra)
    assert result.exit_code == 0, doc["errors"]
    return doc["data"]["backup_id"], doc


def test_check_dest_lists_every_check_and_follows_verify(lab, cli, tmp_path):
    dest = tmp_path / "sets"
    prom = tmp_path / "backup.prom"
    backup_id, doc = backup(cli, lab, dest, "--metrics-file", str(prom))
    # metrics of the backup, read back with prometheus_client's parser
    found = samples(prom)
    m = doc["data"]["manifest"]
    assert value(found, "clusterbak_last_run_success", job="backup") == 1
    assert value(found, "clusterbak_failures_total", job="backup") == 0
    assert value(found, "clusterbak_backup_shards", job="backup") == 3
    assert value(found, "clusterbak_backup_bytes", job="backup", kind="stored") == m["totals"]["stored_bytes"]
    for shard in m["shards"]:
        labels = {"job": "backup", "shard": str(shard["index"]), "source": shard["source"]["address"]}
        assert value(found, "clusterbak_backup_shard_save_seconds", **labels) == shard["save"]["duration_s"]
        assert value(found, "clusterbak_backup_shard_transfer_bytes_per_second", **labels) > 0

    # not verified yet: the freshness check is CRITICAL, and every check is listed (OK ones too)
    result, out = cli.json("check", "--dest", str(dest), "--max-age", "26h")
    assert result.exit_code == 3
    by_name = {c["name"]: c["status"] for c in out["data"]["backups"]}
    assert by_name["newest verified set"] == "CRITICAL" and by_name["destination"] == "OK"
    assert by_name["last verify"] == "WARNING" and by_name["last drill"] == "WARNING"

    result, _ = cli.json("verify", "latest", "--dest", str(dest), "--metrics-file", str(tmp_path / "verify.prom"))
    assert result.exit_code == 0
    assert value(samples(tmp_path / "verify.prom"), "clusterbak_verify_bad_files", job="verify") == 0
    result, out = cli.json("check", "--dest", str(dest), "--max-age", "26h")
    assert result.exit_code == 0, out["errors"]
    text = cli("check", "--dest", str(dest), "--max-age", "26h").stdout
    assert "newest verified set: OK" in text and "last drill: WARNING" in text

    # nagios: one line, plugin codes; too old -> CRITICAL (2), too few sets -> CRITICAL
    nag = cli("check", "--dest", str(dest), "--max-age", "26h", "--nagios")
    assert nag.exit_code == 1 and nag.stdout.count("\n") == 1
    assert nag.stdout.startswith("CLUSTERBAK WARNING - last drill: no drill recorded")
    assert "newest_verified_age=" in nag.stdout.split("|")[1]
    time.sleep(1.1)
    nag = cli("check", "--dest", str(dest), "--max-age", "1s", "--nagios")
    assert nag.exit_code == 2 and nag.stdout.startswith("CLUSTERBAK CRITICAL - newest verified set:")
    nag = cli("check", "--dest", str(dest), "--min-sets", "2", "--nagios")
    assert nag.exit_code == 2 and "complete sets: 1 (min 2)" in nag.stdout
    nag = cli("check", "--dest", str(tmp_path / "typo"), "--nagios")
    assert nag.exit_code == 2 and "does not exist" in nag.stdout
    nag = cli("check", "--dest", str(dest), "--max-age", "soon", "--nagios")
    assert nag.exit_code == 3 and nag.stdout.startswith("CLUSTERBAK UNKNOWN - ")


def test_failures_are_counted_and_the_last_success_is_kept(lab, cli, tmp_path):
    prom = tmp_path / "backup.prom"
    backup(cli, lab, tmp_path / "sets", "--metrics-file", str(prom))
    success = value(samples(prom), "clusterbak_last_success_timestamp_seconds", job="backup")
    afile = tmp_path / "afile"
    afile.write_text("x")
    for _ in range(2):
        result, _ = cli.json("backup", "--seed", lab.seed, "--inventory", lab.inventory, "--dest", str(afile),
                             "--metrics-file", str(prom))
        assert result.exit_code == 3
    found = samples(prom)
    assert value(found, "clusterbak_failures_total", job="backup") == 2
    assert value(found, "clusterbak_last_run_success", job="backup") == 0
    assert value(found, "clusterbak_last_success_timestamp_seconds", job="backup") == success
    assert not list(tmp_path.glob("*.prom.*"))  # written atomically: no temp file left
    # rolling-restart takes the flag too (a dry run is a successful run)
    result, _ = cli.json("rolling-restart", "--seed", lab.seed, "--inventory", lab.inventory, "--dry-run",
                         "--metrics-file", str(tmp_path / "rolling.prom"))
    assert result.exit_code == 0
    assert value(samples(tmp_path / "rolling.prom"), "clusterbak_last_run_success", job="rolling-restart") == 1


def test_retention_from_config_and_which_rule_kept_each_set(lab, cli, tmp_path):
    dest = tmp_path / "sets"
    older, _ = backup(cli, lab, dest)
    time.sleep(1.1)  # ids are per second
    newer, _ = backup(cli, lab, dest)
    config = tmp_path / "clusterbak.toml"
    config.write_text("[retention]\nkeep_last = 1\n")
    result, doc = cli.json("prune", "--dest", str(dest), "--config", str(config), "--dry-run")
    assert result.exit_code == 0
    rows = {d["backup_id"]: d for d in doc["data"]["decisions"]}
    assert rows[newer]["action"] == "keep" and rows[newer]["rule"] == "newest"
    assert rows[older]["action"] == "delete" and rows[older]["rule"] == "none"
    assert doc["data"]["policy"]["keep_last"] == 1
    # a flag wins over the file, and says so
    result, doc = cli.json("prune", "--dest", str(dest), "--config", str(config), "--keep-last", "2", "--dry-run")
    rows = {d["backup_id"]: d for d in doc["data"]["decisions"]}
    assert rows[older]["action"] == "keep" and rows[older]["rule"] == "keep_last"
    assert rows[older]["rule_from"] == "--keep-last"
    text = cli("prune", "--dest", str(dest), "--config", str(config), "--dry-run", env={"COLUMNS": "200"}).stdout
    assert f"keep_last 1 ({config} [retention])" in text and "no rule" in text
    # the real run, from the config file alone (env var), with metrics
    result, doc = cli.json("prune", "--dest", str(dest), "--yes", "--metrics-file", str(tmp_path / "prune.prom"),
                           env={"CLUSTERBAK_CONFIG": str(config)})
    assert result.exit_code == 0 and doc["data"]["deleted"] == [older]
    assert sorted(p.name for p in dest.iterdir()) == [newer]
    assert value(samples(tmp_path / "prune.prom"), "clusterbak_prune_deleted_sets", job="prune") == 1
    bad = tmp_path / "bad.toml"
    bad.write_text("[retention]\nkeep_lats = 1\n")
    result, doc = cli.json("prune", "--dest", str(dest), "--config", str(bad))
    assert result.exit_code == 2 and "unknown key 'keep_lats'" in doc["errors"][0]


def test_drill_records_its_result_for_check_and_writes_metrics(lab, cli, tmp_path):
    dest = tmp_path / "sets"
    backup(cli, lab, dest)
    assert cli("verify", "latest", "--dest", str(dest), "--quiet").exit_code == 0
    result, doc = cli.json("drill", "latest", "--dest", str(dest), "--metrics-file", str(tmp_path / "drill.prom"))
    assert result.exit_code == 0, doc["errors"]
    found = samples(tmp_path / "drill.prom")
    assert value(found, "clusterbak_drill_rto_seconds", job="drill") == doc["data"]["rto_seconds"]
    assert value(found, "clusterbak_drill_rpo_seconds", job="drill") == doc["data"]["rpo_seconds"]
    nag = cli("check", "--dest", str(dest), "--nagios")
    assert nag.exit_code == 0 and nag.stdout.startswith("CLUSTERBAK OK - 7 checks ok |")
    assert json.loads(cli("check", "--dest", str(dest), "--json").stdout)["data"]["ready"] is True
