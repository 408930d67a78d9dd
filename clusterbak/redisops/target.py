"""Probe restore targets, stop them over Redis, and wait for them to go down or come up."""

from __future__ import annotations

import time

import redis

from clusterbak.errors import ConnectError
from clusterbak.model.names import NODE_ID
from clusterbak.model.state import CONFIG_KEYS, TargetState
from clusterbak.model.versions import ServerVersion
from clusterbak.redisops.connect import ConnectionOptions, describe_redis_error, is_down, make_client, split_address
from clusterbak.redisops.discover import read_config
from clusterbak.redisops.nodeinfo import read_modules


def probe_target(conn: ConnectionOptions, address: str) -> TargetState:
    """What a restore target is now. Only a refused connection or a timeout means "down" (fine to overwrite);
    an authentication, permission or TLS failure is a ConnectError (exit 3) naming the node and the cause: a node
    we may not talk to is not a node that is not running."""
    host, port = split_address(address)
    client = make_client(conn, host, port)
    try:
        node_id = client.execute_command("CLUSTER", "MYID")
        if not isinstance(node_id, str) or not NODE_ID.fullmatch(node_id):
            raise ConnectError(f"{address}: CLUSTER MYID answered {str(node_id)[:60]!r}, not a node id")
        known = len([line for line in client.execute_command("CLUSTER", "NODES").splitlines() if line.strip()])
        dbsize = int(client.dbsize())
        config, _ = read_config(client, CONFIG_KEYS)
        info_server = client.info("server")
        server = ServerVersion.from_info(info_server)
        return TargetState(address, True, node_id, dbsize, known, config, server.text if server else None,
                           config_file=str(info_server.get("config_file") or "") or None, modules=read_modules(client))
    except (redis.RedisError, OSError) as exc:
        if is_down(exc):
            return TargetState(address, False)
        raise ConnectError(f"restore target {describe_redis_error(address, exc, conn)}; nothing was stopped") from exc
    finally:
        client.close()


def shutdown_nosave(conn: ConnectionOptions, address: str) -> None:
    host, port = split_address(address)
    client = make_client(conn, host, port)
    try:
        client.execute_command("SHUTDOWN", "NOSAVE")
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        pass  # the connection closing is the answer to a SHUTDOWN
    finally:
        client.close()


def answers(conn: ConnectionOptions, address: str) -> bool:
    host, port = split_address(address)
    client = make_client(conn, host, port, socket_timeout=2.0)
    try:
        client.ping()
        return True
    except redis.BusyLoadingError:
        return True
    except (redis.RedisError, OSError) as exc:
        return not is_down(exc)  # refusing us (auth, TLS) is still answering
    finally:
        client.close()


def wait_down(conn: ConnectionOptions, address: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not answers(conn, address):
            return True
        time.sleep(0.1)
    return False
