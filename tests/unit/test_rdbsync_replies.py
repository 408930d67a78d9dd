"""What a node answers to PSYNC is untrusted: every line is checked, bounded and named."""

from __future__ import annotations

import pytest
import redis

from clusterbak.errors import AccessRefused
from clusterbak.redisops.rdbsync import MAX_SNAPSHOT, ProtocolError, error_of, parse_bulk_length, parse_fullresync

ADDR = "10.0.0.5:6379"
REPLID = "a" * 40


def test_fullresync_gives_the_history_and_offset_the_snapshot_holds():
    r = parse_fullresync(ADDR, f"+FULLRESYNC {REPLID} 123456".encode())
    assert (r.replid, r.offset) == (REPLID, 123456)


@pytest.mark.parametrize("line", [
    b"+CONTINUE",  # a partial resync: we asked for none
    b"+FULLRESYNC " + b"g" * 40 + b" 1",  # not hex
    b"+FULLRESYNC " + b"a" * 39 + b" 1",
    b"+FULLRESYNC " + REPLID.encode() + b" -1",
    b"+FULLRESYNC " + REPLID.encode() + b" 1; CONFIG SET dir /",
    b"+FULLRESYNC " + REPLID.encode() + b" " + b"9" * 30,
    b"$100",
    b"",
])
def test_anything_else_than_fullresync_is_refused_naming_the_node(line):
    with pytest.raises(ProtocolError) as err:
        parse_fullresync(ADDR, line)
    assert ADDR in str(err.value) and err.value.exit_code == 4


def test_the_snapshot_length_is_a_bounded_number():
    assert parse_bulk_length(ADDR, b"$0") == 0
    assert parse_bulk_length(ADDR, b"$1048576") == 1048576
    for bad in (b"$EOF:" + b"x" * 40, b"$-1", b"$12ab", b"*1", b"$" + str(MAX_SNAPSHOT + 1).encode()):
        with pytest.raises(ProtocolError) as err:
            parse_bulk_length(ADDR, bad)
        assert ADDR in str(err.value)


def test_error_lines_become_the_errors_they_are():
    noperm = error_of(ADDR, b"-NOPERM User backup has no permissions to run the 'psync' command")
    assert isinstance(noperm, AccessRefused) and ADDR in str(noperm) and "+psync +replconf" in str(noperm)
    assert isinstance(error_of(ADDR, b"-WRONGPASS invalid username-password pair"), redis.AuthenticationError)
    other = error_of(ADDR, b"-NOMASTERLINK Can't SYNC while not connected with my master")
    assert isinstance(other, redis.ResponseError) and "NOMASTERLINK" in str(other)
    assert len(str(error_of(ADDR, b"-ERR " + b"x" * 10_000))) <= 200
