"""model/address.py: host:port split in one place; the callers' checks on top stay theirs."""

from __future__ import annotations

import pytest

from clusterbak.errors import UsageError
from clusterbak.model.address import Address
from clusterbak.model.names import NameError_, check_address
from clusterbak.model.nodesconf import NodesConfError, parse_new_address
from clusterbak.plan.restore import parse_maps


@pytest.mark.parametrize("text, expected", [
    ("10.0.0.1:6379", Address("10.0.0.1", 6379)),
    ("redis-a.internal:7000", Address("redis-a.internal", 7000)),
    ("[::1]:7000", Address("[::1]", 7000)),
    ("::1:7000", Address("::1", 7000)),  # split at the last colon, as Redis writes IPv6 in CLUSTER NODES
])
def test_parse_splits_at_the_last_colon_and_keeps_the_host_as_written(text, expected):
    assert Address.parse(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize("text", ["", "10.0.0.1", ":6379", "h:", "h:0", "h:65536", "h:12a", "h:-1"])
def test_parse_refuses_what_is_not_host_and_port(text):
    assert Address.parse(text) is None


def test_bare_host_drops_brackets_and_of_splits_a_checked_address():
    assert Address("[::1]", 1).bare_host == "::1"
    assert Address.of(":0") == Address("", 0)  # CLUSTER NODES' node without an address


def test_callers_raise_their_own_typed_errors():
    assert check_address("[::1]:7000") == ("::1", 7000)
    with pytest.raises(NameError_):
        check_address("h:0")
    assert parse_new_address("10.1.1.1:6000").cport == 16000
    with pytest.raises(NodesConfError):
        parse_new_address("10.1.1.1:99999")  # a port out of range was accepted before
    with pytest.raises(UsageError, match="--map"):
        parse_maps(["127.0.0.1:7000=10.1.1.1:0"])
