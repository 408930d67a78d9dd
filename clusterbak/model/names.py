"""What a name, a path, a node id or an address may look like when it comes from outside (a backup set, a node's
reply). Pure. Every value that ends up in a path or a command line is checked here first.
"""

from __future__ import annotations

import posixpath
import re

from clusterbak.model.address import Address

NODE_ID = re.compile(r"[0-9a-f]{40}")
# A bare file name: no separator, no leading dot (so never "." or ".."), no control or shell-special characters.
BARE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._@+:=,-]{0,254}")
HOST = re.compile(r"[A-Za-z0-9_.:-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]")
CONTAINER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
MAX_DEPTH = 3


class NameError_(ValueError):  # noqa: N801 - a ValueError the callers turn into their own typed error
    """A value from outside that does not have the allowed shape; the message says which rule it broke."""


def check_node_id(value: object) -> str:
    if not isinstance(value, str) or not NODE_ID.fullmatch(value):
        raise NameError_(f"node id {_show(value)} is not 40 lowercase hex characters")
    return value


def check_bare_name(value: object) -> str:
    if not isinstance(value, str) or not BARE_NAME.fullmatch(value):
        raise NameError_(f"{_show(value)} is not a bare file name (letters, digits, ._@+:=,- and no leading dot)")
    return value


def check_relative_path(value: object) -> str:
    """A path inside a backup set: 1-3 bare names joined by '/'. Never absolute, never '..'."""
    if not isinstance(value, str) or not value or value.startswith("/") or "\\" in value:
        raise NameError_(f"{_show(value)} is not a relative path inside the set")
    parts = value.split("/")
    if len(parts) > MAX_DEPTH:
        raise NameError_(f"{_show(value)} is nested deeper than {MAX_DEPTH} levels")
    for part in parts:
        try:
            check_bare_name(part)
        except NameError_:
            raise NameError_(f"{_show(value)} is not a relative path inside the set (bad part {_show(part)})") from None
    return value


def check_address(value: object) -> tuple[str, int]:
    """host:port as CLUSTER NODES shows it (IPv6 hosts may be bracketed)."""
    address = Address.parse(value) if isinstance(value, str) else None
    if address is None or not HOST.fullmatch(address.host):
        raise NameError_(f"address {_show(value)} is not host:port")
    return address.bare_host, address.port


def check_host(value: object) -> str:
    if not isinstance(value, str) or not HOST.fullmatch(value):
        raise NameError_(f"host {_show(value)} has characters a host name or IP address cannot have")
    return value


def check_container(value: object) -> str:
    if not isinstance(value, str) or not CONTAINER.fullmatch(value):
        raise NameError_(f"container name {_show(value)} is not a Docker container name")
    return value


def check_absolute_dir(value: object) -> str:
    """A directory on a node's host: absolute, normalised, no control characters. Spaces and quotes are allowed
    (a value is always quoted before it reaches a shell)."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise NameError_(f"directory {_show(value)} is not an absolute path")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise NameError_(f"directory {_show(value)} contains control characters")
    if posixpath.normpath(value) != value.rstrip("/") and value != "/":
        raise NameError_(f"directory {_show(value)} is not a normalised path ('.', '..' or '//' in it)")
    return value


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
