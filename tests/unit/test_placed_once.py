"""A drill's shard placed once, linked for its other nodes (engine/placed_once.py), on real files."""

from __future__ import annotations

import threading

import pytest

from clusterbak.engine.placed_once import PlacedOnce
from clusterbak.errors import VerifyError
from clusterbak.transports.local import LocalTransport


def test_a_node_that_waits_for_a_damaged_first_copy_fails_with_the_same_error(tmp_path):
    """Whichever node of the shard writes first, every node reports the damaged file (exit 4), not a generic
    'not placed' (the drill's damaged-set test once saw that when the replica's thread came first)."""
    copies, transport = PlacedOnce(), LocalTransport()
    started, release = threading.Event(), threading.Event()

    def damaged() -> None:
        started.set()
        release.wait(10)
        raise VerifyError("sets/x/shard-01.rdb.zst: sha256 mismatch")

    errors: dict[str, BaseException] = {}

    def place(name: str, write) -> None:
        try:
            copies.place("shard-01", str(tmp_path / name), transport, write, 10)
        except BaseException as exc:  # noqa: BLE001 - collected for the asserts
            errors[name] = exc

    first = threading.Thread(target=place, args=("replica.rdb", damaged))
    first.start()
    assert started.wait(10)
    second = threading.Thread(target=place, args=("master.rdb", lambda: pytest.fail("second node wrote")))
    second.start()
    release.set()
    first.join(10)
    second.join(10)
    assert isinstance(errors["replica.rdb"], VerifyError)
    assert isinstance(errors["master.rdb"], VerifyError)
    assert "shard-01.rdb.zst" in str(errors["master.rdb"])


def test_the_other_nodes_get_a_hard_link_of_the_first_copy(tmp_path):
    copies, transport = PlacedOnce(), LocalTransport()
    a, b = tmp_path / "a" / "dump.rdb", tmp_path / "b" / "dump.rdb"
    a.parent.mkdir()
    b.parent.mkdir()
    copies.place("s", str(a), transport, lambda: a.write_bytes(b"REDIS0011data"), 13)
    copies.place("s", str(b), transport, lambda: pytest.fail("second node wrote"), 13)
    assert b.read_bytes() == b"REDIS0011data" and a.stat().st_ino == b.stat().st_ino
    assert copies.linked == {str(b): str(a)}
