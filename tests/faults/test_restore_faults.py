"""Faults during restore, on a real lab (docs/faults.md, "rolling restart and restore").

The lab's nodes SAVE their current data first, so "the previous files" are the live data: an undone restore
must bring back exactly that, and a rerun must then restore the set.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from clusterbak.engine.restore_journal import journal_path
from tests.faults.common import wait_for
from tests.faults.test_rolling_faults import healthy
from tests.integration.test_restore import digests, roles, take_backup

pytestmark = [pytest.mark.integration, pytest.mark.slow]
LEFTOVER_MARKS = (".clusterbak-tmp-", ".before-restore-", ".failed-restore-")


def settle_and_save(handle) -> None:
    """Keys without a TTL, replicas caught up, and every node's files holding what it has in memory."""
    for n in handle.lab.nodes:
        c = redis.Redis(port=n.port)
        if c.info("replication")["role"] == "master":
            for key in c.scan_iter(count=1000):
                c.persist(key)
            c.execute_command("WAIT", 1, 5000)
    for n in handle.lab.nodes:
        redis.Redis(port=n.port).save()


def leftovers(handle) -> list[str]:
    found = [
        str(p) for n in handle.lab.nodes for p in Path(n.dir).iterdir() if any(m in p.name for m in LEFTOVER_MARKS)
    ]
    inv_dir = Path(handle.inventory).parent
    return found + [str(p) for p in inv_dir.iterdir() if ".tmp-" in p.name]


def restore_proc(handle, backup_id: str, dest: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "clusterbak", "restore", backup_id, "--dest", str(dest),
                             "--inventory", handle.inventory, "--yes", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def journal(handle) -> dict | None:
    try:
        return json.loads(journal_path(handle.inventory).read_text())
    except (OSError, ValueError):
        return None


def journal_phase(handle) -> str | None:
    return (journal(handle) or {}).get("phase")


def some_node_stopped(handle) -> bool:
    return any(n["stopped"] for n in (journal(handle) or {}).get("nodes", {}).values())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("times", [1, 2], ids=["once", "twice"])
def test_interrupt_during_restore(make_lab, cli, tmp_path, sig, times):
    """Once: the nodes stopped so far finish stopping, nothing is placed, every node gets its previous files and
    runs again (exit 130, "nothing changed"). Twice: stops at once; the journal holds the exact state and the
    line names `--resume` and `--rollback`; --rollback brings every node back. Then a rerun restores the set."""
    handle = make_lab(keys=400)
    settle_and_save(handle)
    in_set, roles_before = digests(handle), roles(handle)
    dest = tmp_path / "sets"
    backup_id = take_backup(cli, handle, dest)
    rc = RedisCluster(host="127.0.0.1", port=handle.port)
    for i in range(200):  # the live data moves on after the backup
        rc.set(f"after-backup:{i}", i)
    rc.close()
    settle_and_save(handle)
    previous = digests(handle)
    assert previous != in_set

    proc = restore_proc(handle, backup_id, dest)
    try:
        if times == 1:
            wait_for(lambda: journal_phase(handle) is not None, 60, "the restore starts", interval=0.005)
            proc.send_signal(sig)
        else:  # the second one comes while the first one's undo (starting every node again) is under way
            wait_for(lambda: some_node_stopped(handle), 60, "a node is stopped", interval=0.005)
            proc.send_signal(sig)
            # the second only once the first was handled: two signals that arrive before Python runs its handler
            # are one signal (the C-level flag coalesces them), which under load made this row flaky
            wait_for(lambda: journal_phase(handle) == "rolling back", 60, "the undo starts", interval=0.002)
            proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    doc = json.loads(out)
    (line,) = doc["errors"]
    if times == 1:
        assert "every node has its previous files back and was started again; nothing changed" in line, line
        assert not journal_path(handle.inventory).exists()
    else:
        assert "stopped at once" in line and f"{backup_id} --dest" in line, line
        assert "--resume" in line and "--rollback" in line, line
        assert all(n.address in line.split("now: ", 1)[1] for n in handle.lab.nodes), "the state of every node"
        assert json.loads(journal_path(handle.inventory).read_text())["backup_id"] == backup_id
        result, rdoc = cli.json("restore", backup_id, "--dest", str(dest), "--inventory", handle.inventory,
                                "--yes")
        assert result.exit_code == 3 and "--rollback" in rdoc["errors"][0], "a new restore refuses meanwhile"
        result, rdoc = cli.json("restore", backup_id, "--dest", str(dest), "--inventory", handle.inventory,
                                "--rollback", "--dry-run")
        assert result.exit_code == 0 and journal_path(handle.inventory).exists(), "a dry run changes nothing"
        result, rdoc = cli.json("restore", backup_id, "--dest", str(dest), "--inventory", handle.inventory,
                                "--rollback", "--yes")
        assert result.exit_code == 0, rdoc["errors"]
        assert not journal_path(handle.inventory).exists()
    wait_for(lambda: healthy(handle), 60, "the cluster is healthy on its previous files")
    assert digests(handle) == previous and roles(handle) == roles_before
    assert leftovers(handle) == []

    result, rdoc = cli.json("restore", backup_id, "--dest", str(dest), "--inventory", handle.inventory, "--yes")
    assert result.exit_code == 0, rdoc["errors"]
    assert digests(handle) == in_set and roles(handle) == roles_before
    names = [p.name for n in handle.lab.nodes for p in Path(n.dir).iterdir() if ".before-restore-" in p.name]
    assert names and all(backup_id in name for name in names), "the previous files are kept beside"
    assert not journal_path(handle.inventory).exists()


def test_killed_restore_is_refused_until_resumed(make_lab, cli, tmp_path):
    """kill -9 of clusterbak mid-restore: the next restore refuses naming the state and both commands;
    --resume finishes it."""
    handle = make_lab(keys=300)
    settle_and_save(handle)
    in_set, roles_before = digests(handle), roles(handle)
    dest = tmp_path / "sets"
    backup_id = take_backup(cli, handle, dest)
    proc = restore_proc(handle, backup_id, dest)
    try:
        wait_for(
            lambda: journal_phase(handle) in ("placing", "starting"), 60, "the restore places files", interval=0.005
        )
        proc.kill()
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    result, doc = cli.json("restore", backup_id, "--dest", str(dest), "--inventory", handle.inventory, "--yes")
    assert result.exit_code == 3, doc
    assert "was cut short" in doc["errors"][0] and "--resume" in doc["errors"][0] and "--rollback" in doc["errors"][0]
    result, doc = cli.json("restore", backup_id, "--dest", str(dest), "--inventory", handle.inventory, "--resume",
                           "--yes")
    assert result.exit_code == 0, doc["errors"]
    assert digests(handle) == in_set and roles(handle) == roles_before
    assert not journal_path(handle.inventory).exists()
    assert not [p for p in leftovers(handle) if ".before-restore-" not in p]
