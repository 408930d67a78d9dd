"""What a node needs to come back besides its data: where its config file is, its ACL file or in-memory users,
its modules. Read-only, except `apply_users` (the drill). Replies are untrusted: paths are checked by the caller."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from clusterbak.model.nodeconfig import ModuleLoaded, acl_users, parse_module_list
from clusterbak.model.versions import ServerVersion
from clusterbak.redisops.connect import ConnectionOptions, make_client, split_address


@dataclass(frozen=True, slots=True)
class NodeExtras:
    config_file: str  # INFO server config_file ("" when started without one)
    aclfile: str | None  # CONFIG GET aclfile ("" none; None: CONFIG GET refused)
    acl_list: tuple[str, ...] | None  # ACL LIST lines, read only when there is no aclfile (None: not read)
    modules: tuple[ModuleLoaded, ...] | None  # None: MODULE LIST refused
    notes: tuple[str, ...]  # what could not be read, and why


def _refused(exc: redis.ResponseError) -> str:
    text = str(exc).split("\n")[0][:160]
    if isinstance(exc, redis.exceptions.NoPermissionError) or "noperm" in text.lower():
        return "not permitted (NOPERM)"
    return f"refused ({text})"


def read_node_extras(client: redis.Redis, address: str) -> NodeExtras:
    """INFO server, CONFIG GET aclfile, ACL LIST (without an aclfile) and MODULE LIST; a refused command is a note."""
    notes: list[str] = []
    config_file = str(client.info("server").get("config_file") or "")
    aclfile = acl_list = modules = None
    try:
        reply = client.execute_command("CONFIG", "GET", "aclfile")
        values = list(reply.values()) if isinstance(reply, dict) else list(reply)[1::2]
        aclfile = str(values[0]) if values else ""
    except redis.ResponseError as exc:
        notes.append(f"{address}: CONFIG GET aclfile {_refused(exc)}")
    if not aclfile:
        try:
            acl_list = tuple(str(line) for line in client.execute_command("ACL", "LIST"))
        except redis.ResponseError as exc:
            notes.append(f"{address}: ACL LIST {_refused(exc)}: its users were not collected")
    try:
        modules = parse_module_list(client.execute_command("MODULE", "LIST"))
    except redis.ResponseError as exc:
        notes.append(f"{address}: MODULE LIST {_refused(exc)}: its modules were not recorded")
    return NodeExtras(config_file, aclfile, acl_list, modules, tuple(notes))


def read_modules(client: redis.Redis) -> tuple[ModuleLoaded, ...] | None:
    try:
        return parse_module_list(client.execute_command("MODULE", "LIST"))
    except redis.ResponseError:
        return None


def apply_users(conn: ConnectionOptions, address: str, text: str, skip: frozenset[str] = frozenset()) -> list[str]:
    """ACL SETUSER <name> reset <rules> for each user of an ACL-file text (hashes go over as #hash, never plain);
    returns the names applied."""
    host, port = split_address(address)
    client = make_client(conn, host, port)
    try:
        applied = []
        for name, rules in acl_users(text).items():
            if name in skip:
                continue
            client.execute_command("ACL", "SETUSER", name, "reset", *rules)
            applied.append(name)
        return applied
    finally:
        client.close()


def users_now(conn: ConnectionOptions, address: str) -> dict[str, list[str]]:
    host, port = split_address(address)
    client = make_client(conn, host, port)
    try:
        return {name: rules for name, rules in acl_users("\n".join(client.execute_command("ACL", "LIST"))).items()}
    finally:
        client.close()


def authenticates(conn: ConnectionOptions, address: str, user: str, password: str) -> str | None:
    """None when `user`/`password` authenticate at `address` and may PING; else why not (no secret in it)."""
    host, port = split_address(address)
    client = make_client(conn, host, port)
    try:
        if client.execute_command("AUTH", user, password) not in (True, "OK", b"OK"):
            return "AUTH did not answer OK"
        client.ping()
        return None
    except redis.RedisError as exc:
        return type(exc).__name__ + ": " + str(exc).split("\n")[0][:120].replace(password, "<secret>")
    finally:
        client.close()


def server_versions(conn: ConnectionOptions, addresses: list[str]) -> dict[str, str | None]:
    """address -> "redis 7.0.15" / "valkey 8.1.1" from INFO server now; None when it does not answer."""
    out: dict[str, str | None] = {}
    for address in addresses:
        host, port = split_address(address)
        client = make_client(conn, host, port)
        try:
            sv = ServerVersion.from_info(client.info("server"))
            out[address] = sv.text if sv else None
        except (redis.RedisError, OSError):
            out[address] = None
        finally:
            client.close()
    return out
