"""The inventory: how to reach each node's host. Parsed from an already-loaded TOML dict; written as TOML text by
`inventory_toml` (for the labs and `clusterbak inventory --docker`).

Pure: checks shape and values only. Files it names (ssh keys, known_hosts) are checked by
clusterbak.config, which is allowed to touch the filesystem.
"""

from __future__ import annotations

import json
import shlex
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from clusterbak.errors import InventoryError
from clusterbak.model.address import Address
from clusterbak.model.names import (
    NameError_,
    check_absolute_dir,
    check_bare_name,
    check_container,
    check_host,
    check_node_id,
)
from clusterbak.model.topology import Topology

TRANSPORTS = ("ssh", "local", "docker")
PLACEHOLDERS = frozenset({"host", "port", "node_id", "data_dir", "container"})
REDIS_KEYS = frozenset({"username", "password_env"})
NODE_SETTING_KEYS = frozenset(
    {"transport", "ssh_user", "ssh_port", "ssh_key", "known_hosts", "restart_command",
     "stop_command", "start_command", "data_dir", "ssh_host", "container", "cluster_config_file", "dbfilename",
     "appendonly", "config_file", "aclfile"}
)
COMMAND_KEYS = ("restart_command", "stop_command", "start_command")


@dataclass(frozen=True, slots=True)
class NodeAccess:
    """Everything needed to reach one node's files and run its service commands."""

    address: str
    transport: str = "ssh"
    ssh_host: str | None = None
    ssh_user: str | None = None
    ssh_port: int = 22
    ssh_key: str | None = None
    known_hosts: str | None = None
    data_dir: str | None = None
    container: str | None = None
    restart_command: str | None = None
    stop_command: str | None = None
    start_command: str | None = None
    cluster_config_file: str | None = None  # where a DOWN node keeps nodes.conf (a running node is asked)
    dbfilename: str | None = None
    appendonly: str | None = None  # "yes" | "no"
    config_file: str | None = None  # the node's redis.conf (a running node is asked: INFO server config_file)
    aclfile: str | None = None  # where its ACL file goes (a running node is asked: CONFIG GET aclfile)

    @property
    def host(self) -> str:
        return Address.of(self.address).host

    @property
    def port(self) -> int:
        return Address.of(self.address).port

    def command(self, which: str, node_id: str = "", data_dir: str = "") -> str | None:
        """A service command with its placeholders filled in, or None when not configured.

        Placeholders are data, not shell: each value is checked (port a number, node id 40 hex, paths absolute and
        free of control characters, host and container names of their own alphabet) and shell-quoted, so a value a
        node reports can never become a command. Templates therefore must not quote placeholders themselves."""
        template = getattr(self, which)
        if template is None:
            return None
        used = {name for _, name, _, _ in string.Formatter().parse(template) if name}
        values = {"host": self.host, "port": str(self.port), "node_id": node_id,
                  "data_dir": data_dir or self.data_dir or "", "container": self.container or ""}
        checks: dict[str, Callable[[str], object]] = {
            "host": check_host, "node_id": check_node_id, "data_dir": check_absolute_dir,
            "container": check_container, "port": lambda v: v}
        try:
            for name in used:
                checks[name](values[name])
        except NameError_ as exc:
            raise InventoryError(f"{self.address}: {which} cannot be filled in: {exc}") from None
        filled: str = template.format(**{k: shlex.quote(v) for k, v in values.items()})
        return filled


@dataclass(frozen=True, slots=True)
class Inventory:
    source: str
    username: str | None
    password_env: str
    nodes: tuple[NodeAccess, ...]

    def access(self, address: str, role: str = "is in the cluster") -> NodeAccess:
        """`role` says why the node is wanted (a restore target need not be in any cluster yet)."""
        for node in self.nodes:
            if node.address == address:
                return node
        raise InventoryError(
            f"{self.source}: node {address} {role} but not in the inventory; "
            f'add a [nodes."{address}"] table'
        )

    def addresses(self) -> frozenset[str]:
        return frozenset(n.address for n in self.nodes)

    def unknown_addresses(self, topology: Topology) -> tuple[str, ...]:
        known = {n.address for n in topology.nodes}
        return tuple(n.address for n in self.nodes if n.address not in known)


def parse_inventory(data: Mapping[str, Any], source: str = "inventory") -> Inventory:
    _only(data, {"redis", "defaults", "nodes"}, source, "top level")
    redis = _table(data, "redis", source)
    _only(redis, REDIS_KEYS, source, "[redis]")
    defaults = _table(data, "defaults", source)
    _only(defaults, NODE_SETTING_KEYS - {"ssh_host", "container"}, source, "[defaults]")
    base = _settings(defaults, source, "[defaults]")
    nodes_table = _table(data, "nodes", source)
    nodes = []
    for address, table in nodes_table.items():
        where = f'[nodes."{address}"]'
        _check_address(address, source, where)
        if not isinstance(table, Mapping):
            raise InventoryError(f"{source}: {where} must be a table")
        _only(table, NODE_SETTING_KEYS, source, where)
        merged = {**base, **_settings(table, source, where)}
        node = replace(NodeAccess(address=address), **merged)
        if node.transport == "docker" and not node.container:
            raise InventoryError(f"{source}: {where} uses transport docker but sets no container")
        nodes.append(node)
    return Inventory(
        source=source,
        username=_opt_str(redis, "username", source, "[redis]"),
        password_env=_opt_str(redis, "password_env", source, "[redis]") or "REDISCLI_AUTH",
        nodes=tuple(nodes),
    )


def _settings(table: Mapping[str, Any], source: str, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key == "ssh_port":
            if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
                raise InventoryError(f"{source}: {where} ssh_port must be a port number, got {value!r}")
        elif key == "appendonly":
            if value not in (True, False, "yes", "no"):
                raise InventoryError(f"{source}: {where} appendonly must be true/false or \"yes\"/\"no\"")
            value = "yes" if value in (True, "yes") else "no"
        elif not isinstance(value, str) or not value:
            raise InventoryError(f"{source}: {where} {key} must be a non-empty string")
        if key == "transport" and value not in TRANSPORTS:
            raise InventoryError(f"{source}: {where} transport {value!r} is not one of {', '.join(TRANSPORTS)}")
        if key in COMMAND_KEYS:
            _check_placeholders(value, source, f"{where} {key}")
        try:
            if key == "data_dir":
                check_absolute_dir(value)
            elif key == "dbfilename":
                check_bare_name(value)
            elif key in ("config_file", "aclfile"):
                check_absolute_dir(value)
            elif key == "cluster_config_file":
                check_absolute_dir(value) if value.startswith("/") else check_bare_name(value)
        except NameError_ as exc:
            raise InventoryError(f"{source}: {where} {key}: {exc}") from None
        out[key] = value
    return out


def _check_placeholders(template: str, source: str, where: str) -> None:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise InventoryError(f"{source}: {where}: {exc}") from exc
    unknown = names - PLACEHOLDERS
    if unknown:
        raise InventoryError(
            f"{source}: {where} uses unknown placeholder {{{sorted(unknown)[0]}}}; "
            f"allowed: {', '.join('{' + p + '}' for p in sorted(PLACEHOLDERS))}"
        )


def _check_address(address: str, source: str, where: str) -> None:
    if Address.parse(address) is None:
        raise InventoryError(f"{source}: {where} is not an address host:port as CLUSTER NODES shows it")


def _only(table: Mapping[str, Any], allowed: frozenset[str] | set[str], source: str, where: str) -> None:
    for key in table:
        if key not in allowed:
            raise InventoryError(
                f"{source}: unknown key {key!r} in {where}; allowed: {', '.join(sorted(allowed))}"
            )


def _table(data: Mapping[str, Any], key: str, source: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise InventoryError(f"{source}: [{key}] must be a table")
    return value


def _opt_str(table: Mapping[str, Any], key: str, source: str, where: str) -> str | None:
    value = table.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise InventoryError(f"{source}: {where} {key} must be a non-empty string")
    return value


def inventory_toml(comment: Sequence[str], defaults: Mapping[str, str | int],
                   nodes: Mapping[str, Mapping[str, str | int]]) -> str:
    """An inventory file: `comment` lines, a [defaults] table, one [nodes."ADDR"] table per node, in the order
    given. A string is written as a JSON string, which is a TOML basic string (its escapes included)."""
    def setting(key: str, value: str | int) -> str:
        return f"{key} = {value if isinstance(value, int) and not isinstance(value, bool) else json.dumps(value)}"

    lines = [f"# {line}" if line else "#" for line in comment]
    lines += ["", "[defaults]", *(setting(k, v) for k, v in defaults.items())]
    for address, settings in nodes.items():
        lines += ["", f"[nodes.{json.dumps(address)}]", *(setting(k, v) for k, v in settings.items())]
    return "\n".join(lines) + "\n"
