"""The drill's scratch lab is stopped with SHUTDOWN NOSAVE, not a `python -m clusterbak.lab.nodectl stop` per node
(an interpreter each, all at once: ~0.3 s of the drill's RTO on 2 cores, issue 14); `lab up` keeps all three."""

from __future__ import annotations

import tomllib
from pathlib import Path

from clusterbak.lab.cluster import Lab, LabNode
from clusterbak.lab.inventory import render_inventory
from clusterbak.model.inventory import parse_inventory


def lab(tmp: Path) -> Lab:
    nodes = tuple(LabNode(7000 + i, "master" if i < 1 else "replica", str(tmp / str(7000 + i)), 0) for i in range(2))
    return Lab(str(tmp), 1, 1, 7000, nodes, str(tmp / "inventory.toml"))


def test_lab_up_lists_stop_start_and_restart(tmp_path):
    text = render_inventory(lab(tmp_path))
    assert all(f"{a}_command" in text for a in ("restart", "stop", "start"))


def test_the_scratch_lab_has_no_stop_command_so_a_restore_uses_shutdown_nosave(tmp_path):
    text = render_inventory(lab(tmp_path), ("restart", "start"))
    assert "stop_command" not in text and "start_command" in text
    inventory = parse_inventory(tomllib.loads(text), "scratch")
    assert inventory.access("127.0.0.1:7000").command("stop_command", "a" * 40, str(tmp_path / "7000")) is None
