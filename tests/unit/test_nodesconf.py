from pathlib import Path

import pytest

from clusterbak.model.nodesconf import NewAddress, NodesConfError, addresses, parse_new_address, rewrite

GOLDEN = Path(__file__).parent / "golden"


def test_moving_every_node_matches_the_golden_file():
    text = (GOLDEN / "nodesconf_3x1.conf").read_text()
    mapping = {nid: parse_new_address(f"10.9.0.1:{8100 + int(addr[-2:])}") for nid, addr in addresses(text).items()}
    assert rewrite(text, mapping) == (GOLDEN / "nodesconf_3x1_moved.conf").read_text()


def test_ids_epochs_flags_and_vars_line_are_kept():
    text = (GOLDEN / "nodesconf_3x1.conf").read_text()
    mapping = {nid: NewAddress("10.1.1.1", 6000, 6001) for nid in addresses(text)}
    out = rewrite(text, mapping)
    assert out.splitlines()[-1] == "vars currentEpoch 5 lastVoteEpoch 0"
    for before, after in zip(text.splitlines(), out.splitlines(), strict=True):
        b, a = before.split(" "), after.split(" ")
        assert b[0] == a[0] and b[2:] == a[2:]
    assert "127.0.0.1" not in out


def test_hostname_and_aux_fields_survive():
    text = (GOLDEN / "nodesconf_hostname_aux.conf").read_text()
    out = rewrite(text, {"a" * 4 + "0" * 36: NewAddress("10.0.0.9", 7000, 17000)})
    assert "10.0.0.9:7000@17000,redis-a.internal,shard-id=f00d myself,master" in out


def test_unmapped_node_and_bad_addresses_are_errors():
    text = (GOLDEN / "nodesconf_3x1.conf").read_text()
    with pytest.raises(NodesConfError, match="no new address"):
        rewrite(text, {})
    with pytest.raises(NodesConfError):
        parse_new_address("10.0.0.1")
    assert parse_new_address("h:7000").cport == 17000
    assert parse_new_address("h:7000@7100").cport == 7100
