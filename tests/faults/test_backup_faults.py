"""RDB backups under faults: a source dying mid-BGSAVE, foreign saves, Ctrl-C (D10)."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import redis

from clusterbak.lab import cluster

from .common import (
    assert_clean,
    backup,
    backup_argv,
    client,
    forking,
    in_background,
    remove_flagged_temp_files,
    replicas,
    restart,
    slow_saves,
    spawn,
    wait_for,
    wait_healthy,
)


def rdb_saves(node) -> int:
    return int(client(node).info("persistence")["rdb_saves"])


def test_source_replica_killed_mid_bgsave_fails_the_step_and_cancels_pending_saves(make_lab, cli, tmp_path):
    handle = make_lab(keys=600)
    sources = replicas(handle)
    slow_saves(sources, 20000)  # ~4 s per shard
    dest = tmp_path / "sets"
    proc = spawn(backup_argv(handle, dest, "--parallel", "1"))
    try:
        victim = wait_for(lambda: next((n for n in sources if forking(n)), None), 20, "a BGSAVE to start")
        others = {n.address: rdb_saves(n) for n in sources if n is not victim}
        os.kill(cluster.current_pid(victim), signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    doc = json.loads(out)
    assert proc.returncode == 4, doc["errors"]  # a failed step; it was 3, "refused"
    assert len(doc["errors"]) == 1 and victim.address in doc["errors"][0]
    assert {n.address: rdb_saves(n) for n in sources if n is not victim} == others  # queued saves never ran
    assert not dest.exists() or not any(dest.iterdir())
    restart(victim)
    slow_saves(sources, 0)
    wait_healthy(cli, handle)
    remove_flagged_temp_files(cli, handle, victim)  # its save child died with it, leaving temp-<pid>.rdb
    assert_clean(cli, handle, dest)
    assert backup(cli, handle, dest)[0].exit_code == 0


def test_foreign_bgsaves_before_and_around_ours_are_waited_for_and_recorded(lab, cli, tmp_path):
    source, other, third = replicas(lab)
    slow_saves([source], 6000)  # ~4 s: still running when the backup asks for its own, even on a loaded machine
    slow_saves([other], 1500)  # ~1 s per save on the shared lab's ~670 keys per shard
    try:
        client(source).bgsave()  # before ours: still running when the backup asks
        result, doc = backup(cli, lab, tmp_path / "sets")
        assert result.exit_code == 0, doc["errors"]
        shards = {s["source"]["address"]: s for s in doc["data"]["manifest"]["shards"]}
        assert shards[source.address]["save"]["waited_for_foreign_save"] is True
        assert shards[third.address]["save"]["waited_for_foreign_save"] is False
        assert shards[source.address]["rdb"]["ctime"] >= int(shards[source.address]["save"]["requested_at"]) - 1

        def foreign_save(stop):  # someone else's BGSAVE every 5 ms once ours runs: refused, then started right after
            wait_for(lambda: forking(other) or stop.is_set(), 30, "our BGSAVE to start", 0.01)
            while not stop.is_set():
                try:
                    client(other).bgsave()
                    return  # one foreign save, right after ours
                except redis.ResponseError:
                    time.sleep(0.005)

        with in_background(foreign_save):
            result, doc = backup(cli, lab, tmp_path / "sets")
        assert result.exit_code == 0, doc["errors"]
        save = next(s for s in doc["data"]["manifest"]["shards"] if s["source"]["address"] == other.address)["save"]
        assert save["rdb_saves_after"] > save["rdb_saves_before"]
        if save["rdb_saves_after"] - save["rdb_saves_before"] > 1:  # a foreign save ran inside our wait
            assert save["waited_for_foreign_save"] is True  # it said False
    finally:
        slow_saves(replicas(lab), 0)
    assert_clean(cli, lab, tmp_path / "sets")


def _interrupt(handle, dest, signals: list[int]) -> tuple[int, dict]:
    slow_saves(replicas(handle), 5000)
    proc = spawn(backup_argv(handle, dest))
    try:
        wait_for(lambda: any(forking(n) for n in replicas(handle)), 20, "a BGSAVE to start")
        for sig in signals:
            proc.send_signal(sig)
            time.sleep(0.1)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        slow_saves(replicas(handle), 0)
    return proc.returncode, (json.loads(out) if out.strip() else {"errors": [err]})


@pytest.mark.parametrize("times", [1, 2], ids=["once", "twice"])
def test_sigint_during_backup_leaves_nothing(lab, cli, tmp_path, times):
    dest = tmp_path / "sets"
    code, doc = _interrupt(lab, dest, [signal.SIGINT] * times)
    # -2: a second Ctrl-C that lands after clusterbak finished cleaning up and printed its answer, while Python
    # exits, kills it by SIGINT - the shell shows 130 for both
    assert code in (130, -signal.SIGINT) and doc["errors"] == ["interrupted"], doc
    assert not dest.exists() or not any(dest.iterdir())
    assert_clean(cli, lab, dest)
    assert backup(cli, lab, dest)[0].exit_code == 0


def test_sigterm_during_backup_leaves_nothing(lab, cli, tmp_path):  # issue 13's handler: SIGTERM as SIGINT
    dest = tmp_path / "sets"
    code, doc = _interrupt(lab, dest, [signal.SIGTERM])
    assert code in (130, 143) and doc["errors"] == ["interrupted"], doc
    assert not dest.exists() or not any(dest.iterdir())
    assert_clean(cli, lab, dest)
