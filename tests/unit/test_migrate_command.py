"""The MIGRATE command restore-keys sends to a scratch server, as the server parses it."""

from __future__ import annotations

import hiredis

from clusterbak.redisops.dumprestore import migrate_command


def parse(packed: bytes) -> list[bytes]:
    """A RESP array of bulk strings, as a server reads a request (hiredis reads requests like replies)."""
    reader = hiredis.Reader()
    reader.feed(packed)
    out = reader.gets()
    assert reader.gets() is False, "one command, nothing after it"
    return out


def test_copy_keys_and_no_credentials():
    assert parse(migrate_command("10.0.0.5:7001", [b"a", b"{t}b c"], 5000, False, None, None)) == [
        b"MIGRATE", b"10.0.0.5", b"7001", b"", b"0", b"5000", b"COPY", b"KEYS", b"a", b"{t}b c"]


def test_replace_and_password_only():
    assert parse(migrate_command("h:1", [b"k"], 10, True, None, "pw")) == [
        b"MIGRATE", b"h", b"1", b"", b"0", b"10", b"COPY", b"REPLACE", b"AUTH", b"pw", b"KEYS", b"k"]


def test_user_and_password_is_auth2():
    assert parse(migrate_command("h:1", [b"\x00\xff"], 10, False, "restorer", "pw")) == [
        b"MIGRATE", b"h", b"1", b"", b"0", b"10", b"COPY", b"AUTH2", b"restorer", b"pw", b"KEYS", b"\x00\xff"]
