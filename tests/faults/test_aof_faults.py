"""AOF backups under faults (D1, D9): pinned settings always come back, from a durable record if need be."""

from __future__ import annotations

import json
import os
import signal
import time

from clusterbak.lab import cluster

from .common import (
    assert_clean,
    backup,
    backup_argv,
    client,
    config,
    findings,
    remove_flagged_temp_files,
    replicas,
    restart,
    slow_saves,
    spawn,
    wait_for,
    wait_healthy,
)

AOF = {"appendonly": "yes"}
ORIGINALS = {"auto-aof-rewrite-percentage": "100", "appendfsync": "everysec"}


def settings(node) -> dict[str, str]:
    return {k: config(node, k) for k in ORIGINALS}


def pinned(handle) -> list:
    return [n for n in replicas(handle) if settings(n) != ORIGINALS]


def test_kill_9_mid_run_check_flags_the_pins_and_unpin_or_a_later_run_puts_the_originals_back(make_lab, cli, tmp_path):
    handle = make_lab(keys=600, extra_conf=AOF)
    slow_saves(replicas(handle), 20000)  # ~4 s per rewrite
    dest = tmp_path / "sets"
    for round_ in ("later backup", "unpin"):
        proc = spawn(backup_argv(handle, dest, "--aof", "--relax-fsync"))
        try:
            first = wait_for(lambda: pinned(handle), 20, "a replica to be pinned")
            for _ in range(10):  # pinned only inside the per-host turn: never a node still waiting for it
                assert len(pinned(handle)) <= 1, [n.address for n in pinned(handle)]
                time.sleep(0.05)
            proc.kill()  # kill -9: no finally, no put back
            proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        victim = first[0]
        assert settings(victim) == {"auto-aof-rewrite-percentage": "0", "appendfsync": "no"}
        code, found = findings(cli, handle)
        flagged = [f for f in found if f["code"] == "settings_pinned"]
        assert code == 3 and [f["subject"] for f in flagged] == [victim.address], found
        assert flagged[0]["severity"] == "critical" and "clusterbak unpin" in flagged[0]["message"]
        if round_ == "later backup":
            slow_saves(replicas(handle), 0)
            result, doc = backup(cli, handle, dest, "--aof", "--relax-fsync")  # reads the record, not the pins
            assert result.exit_code == 0, doc["errors"]
            victim_shard = next(
                s for s in doc["data"]["manifest"]["shards"] if s["source"]["address"] == victim.address
            )
            assert victim_shard["rewrite"]["settings_pinned"] == ORIGINALS
            slow_saves(replicas(handle), 20000)
        else:
            result, doc = cli.json("unpin", "--seed", handle.seed, "--dry-run")
            assert result.exit_code == 0 and [x["node"] for x in doc["data"]["nodes"]] == [victim.address]
            assert settings(victim) != ORIGINALS  # a dry run changes nothing
            result, doc = cli.json("unpin", "--seed", handle.seed, "--yes")
            assert result.exit_code == 0 and doc["data"]["restored"] == [victim.address], doc["errors"]
        assert all(settings(n) == ORIGINALS for n in replicas(handle))
    slow_saves(replicas(handle), 0)
    # the runs were killed during the rewrite, before their first file: a set directory is only made with its first
    # file, so they left none (a kill after it leaves a .partial set, never listed complete; prune removes it)
    result, listing = cli.json("list", "--dest", str(dest))
    assert sorted(s["status"] for s in listing["data"]["sets"]) == ["complete"]
    result, doc = cli.json("prune", "--dest", str(dest), "--keep-last", "1", "--partial-grace-hours", "0", "--yes")
    assert result.exit_code == 0 and doc["data"]["deleted"] == []
    assert_clean(cli, handle, dest)
    assert backup(cli, handle, dest, "--aof")[0].exit_code == 0


def test_two_runs_0_3_s_apart_the_second_refuses_and_the_originals_stay_true(make_lab, cli, tmp_path):
    handle = make_lab(keys=600, extra_conf=AOF)
    slow_saves(replicas(handle), 5000)  # ~1 s per rewrite
    dest = tmp_path / "sets"
    first = spawn(backup_argv(handle, dest, "--aof", "--relax-fsync"))
    time.sleep(0.3)
    second = spawn(backup_argv(handle, dest, "--aof", "--relax-fsync"))
    outs = {p.pid: p.communicate(timeout=120) for p in (second, first)}
    # one runs, the other refuses naming it (normally the second; on a loaded machine the first may still be
    # importing Python 0.3 s later, and then it is the one that finds the lock taken)
    codes = sorted((p.returncode, p.pid) for p in (first, second))
    assert [c for c, _ in codes] == [0, 3], {pid: out for pid, out in outs.items()}
    winner, loser = codes[0][1], codes[1][1]
    line = json.loads(outs[loser][0])["errors"][0]
    assert f"backup by pid {winner} on " in line and "started" in line, line
    assert all(settings(n) == ORIGINALS for n in replicas(handle))
    slow_saves(replicas(handle), 0)
    assert_clean(cli, handle, dest)


def test_source_killed_mid_rewrite_reports_the_cause_first_then_the_undo(make_lab, cli, tmp_path):
    handle = make_lab(keys=600, extra_conf=AOF)
    slow_saves(replicas(handle), 20000)
    dest = tmp_path / "sets"
    proc = spawn(backup_argv(handle, dest, "--aof", "--relax-fsync", "--parallel", "1"))
    victim = wait_for(lambda: pinned(handle), 20, "a replica to be pinned")[0]
    wait_for(lambda: int(client(victim).info("persistence")["aof_rewrite_in_progress"]), 10, "its rewrite to start")
    os.kill(cluster.current_pid(victim), signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    doc = json.loads(out)
    assert proc.returncode == 4, doc["errors"]
    line = doc["errors"][0]
    assert line.index(victim.address) < line.index("COULD NOT RESTORE SETTINGS"), line  # the cause comes first
    assert "clusterbak unpin" in line and f"-p {victim.port} CONFIG SET appendfsync" in line
    assert not dest.exists() or not any(dest.iterdir())
    # the operator's next steps, as docs/faults.md gives them: start the node, check, unpin, delete temp files
    restart(victim)
    slow_saves(replicas(handle), 0)
    wait_healthy(cli, handle)
    code, found = findings(cli, handle)
    assert [f["subject"] for f in found if f["code"] == "pin_record_stale"] == [victim.address]
    remove_flagged_temp_files(cli, handle, victim)  # what its rewrite child left when the server died
    assert cli.json("unpin", "--seed", handle.seed, "--yes")[0].exit_code == 0
    assert_clean(cli, handle, dest)
    assert backup(cli, handle, dest, "--aof")[0].exit_code == 0
