"""The destination fills up (a small tmpfs): during a shard, and exactly at manifest.json (D8)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .common import assert_clean, backup

PAGE = 4096


@pytest.fixture
def small_fs(tmp_path):
    """mount -t tmpfs of a given size (we run as root in CI); unmounted after the test."""
    mounted: list[Path] = []

    def make(size: int) -> Path:
        where = tmp_path / f"full{len(mounted)}"
        where.mkdir()
        run = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
                             capture_output=True, text=True)
        if run.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs to fill up (needs root): {run.stderr.strip()}")
        mounted.append(where)
        return where

    yield make
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def pages(directory: Path) -> int:
    return sum(-(-p.stat().st_size // PAGE) for p in directory.rglob("*") if p.is_file() and p.name != "manifest.json")


def test_full_during_a_shard_names_the_file_and_leaves_no_set(lab, cli, small_fs):
    dest = small_fs(4 * PAGE) / "sets"
    result, doc = backup(cli, lab, dest, "--compress", "none")
    assert result.exit_code == 4, doc["errors"]
    line = doc["errors"][0]
    assert str(dest) in line and "No space left on device" in line and ".rdb" in line, line
    assert list(dest.iterdir()) == []  # the .partial set was removed
    assert_clean(cli, lab, dest)


def test_full_exactly_at_the_manifest_exits_4_naming_it(lab, cli, tmp_path, small_fs):
    result, doc = backup(cli, lab, tmp_path / "measure", "--compress", "none")
    assert result.exit_code == 0, doc["errors"]
    needed = pages(Path(doc["data"]["path"]))
    assert (Path(doc["data"]["path"]) / "manifest.json").stat().st_size > PAGE  # so one spare page cannot hold it
    dest = small_fs((needed + 1) * PAGE) / "sets"
    result, doc = backup(cli, lab, dest, "--compress", "none")
    assert result.exit_code == 4, doc["errors"]  # it was 1, "a bug"
    line = doc["errors"][0]
    assert "manifest.json" in line and str(dest) in line and "No space left on device" in line, line
    assert list(dest.iterdir()) == []
    assert_clean(cli, lab, dest)
    assert backup(cli, lab, tmp_path / "roomy")[0].exit_code == 0  # with room, the rerun succeeds
