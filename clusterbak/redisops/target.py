"""Probe restore targets, stop them over Redis, and wait for them to go down or come up."""

from __future__ import annotations

import time

import redis

from clusterbak.model.state import CONFIG_KEYS
from clusterbak.plan.restore import TargetState
from clusterbak.redisops.connect import ConnectionOptions, make_client
from clusterbak.redisops.discover import read_config


def probe_target(conn: ConnectionOptions, address: str) -> TargetState:
    host, port = address.rsplit(":", 1)
    client = make_client(conn, host, int(port))
    try:
        node_id = client.execute_command("CLUSTER", "MYID")
        known = len([line for line in client.execute_command("CLUSTER", "NODES").splitlines() if line.strip()])
        dbsize = int(client.dbsize())
        config, _ = read_config(client, CONFIG_KEYS)
        return TargetState(address, True, node_id, dbsize, known, config)
    except (redis.RedisError, OSError):
        return TargetState(address, False)
    finally:
        client.close()


def shutdown_nosave(conn: ConnectionOptions, address: str) -> None:
    host, port = address.rsplit(":", 1)
    client = make_client(conn, host, int(port))
    try:
        client.execute_command("SHUTDOWN", "NOSAVE")
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        pass  # the connection closing is the answer to a SHUTDOWN
    finally:
        client.close()


def answers(conn: ConnectionOptions, address: str) -> bool:
    host, port = address.rsplit(":", 1)
    client = make_client(conn, host, int(port), socket_timeout=2.0)
    try:
        client.ping()
        return True
    except redis.BusyLoadingError:
        return True
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def wait_down(conn: ConnectionOptions, address: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not answers(conn, address):
            return True
        time.sleep(0.1)
    return False
