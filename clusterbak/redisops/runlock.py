"""The per-cluster run lock: one mutating clusterbak run (backup, restore, rolling-restart) per cluster at a time.

Where it lives, and why there: on the cluster itself, as a *named client connection* on every reachable node
(`CLIENT SETNAME clusterbak-lock:<base64 JSON of host, pid, command, started_at, token>`), kept alive by a PING
every HEARTBEAT_S seconds. Every control host that can reach the cluster sees it (CLIENT LIST), with no shared
filesystem; it writes no key (a key would land in every backup's RDB and every key count); and it cannot outlive
its holder: when the process dies - kill -9 included - the kernel closes its sockets and the lock is gone. A holder
that is alive but wedged (SIGSTOP, a hung host) shows as `idle` in CLIENT LIST: after STALE_S seconds without a
heartbeat it is reported stale and `--break-lock` kills its connections (CLIENT KILL ID).

Who wins a race: each node hands out client ids in increasing order. A run registers on every node (in address
order), then reads CLIENT LIST on each: if another lock connection with a *lower* id exists anywhere, that run came
first there and this one refuses (exit 3). Two runs that each came first on different nodes both refuse: never
both proceed.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis

from clusterbak.errors import ConnectError, PreconditionError
from clusterbak.model.address import Address
from clusterbak.model.topology import Topology
from clusterbak.redisops.connect import ConnectionOptions, make_client

PREFIX = "clusterbak-lock:"
HEARTBEAT_S = 2.0
STALE_S = 30.0


_HELD_HERE: set[str] = set()  # tokens this process holds right now


def _dead_here(holder: Holder) -> bool:
    """A lock connection left by a run on this very host that is over: its pid is gone, or it is this process and
    the token is not one it holds (a connection a cut-off node never saw close). Safe to ignore and clean up."""
    if holder.host != socket.gethostname():
        return False
    if holder.pid == os.getpid():
        return holder.token not in _HELD_HERE
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class RunLockHeld(PreconditionError):
    """Another clusterbak run holds this cluster's run lock; the message names it (host, pid, command, age)."""


@dataclass(frozen=True, slots=True)
class Holder:
    host: str
    pid: int
    command: str
    started_at: float
    token: str
    node: str  # the node whose CLIENT LIST showed it
    client_id: int
    idle_s: int  # seconds since its last command on that node: its heartbeat age

    @property
    def stale(self) -> bool:
        return self.idle_s > STALE_S

    def describe(self, now: float | None = None) -> str:
        age = max(0, int((now or time.time()) - self.started_at))
        text = (f"{self.command} by pid {self.pid} on {self.host}, started {age} s ago "
                f"(lock seen on {self.node}, last heartbeat {self.idle_s} s ago)")
        return text + (f" - STALE: no heartbeat for over {STALE_S:.0f} s" if self.stale else "")


def lock_addresses(topology: Topology) -> list[str]:
    """Every node that can carry the lock: all members with an address."""
    return [n.address for n in topology.nodes if "noaddr" not in n.flags and "handshake" not in n.flags]


def encode_name(host: str, pid: int, command: str, started_at: float, token: str) -> str:
    doc = json.dumps({"h": host, "p": pid, "c": command, "t": round(started_at, 3), "k": token},
                     separators=(",", ":")).encode()
    return PREFIX + base64.urlsafe_b64encode(doc).decode().rstrip("=")


def decode_name(name: str) -> dict | None:
    """The holder fields of a lock connection's name; None for any other name or a malformed one."""
    if not name.startswith(PREFIX):
        return None
    raw = name[len(PREFIX):]
    try:
        doc = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        return {"host": str(doc["h"]), "pid": int(doc["p"]), "command": str(doc["c"]),
                "started_at": float(doc["t"]), "token": str(doc["k"])}
    except (ValueError, KeyError, TypeError):
        return None


def _holders_on(client: redis.Redis, address: str) -> list[Holder]:
    out = []
    for entry in client.client_list():
        fields = decode_name(str(entry.get("name", "")))
        if fields is not None:
            out.append(Holder(**fields, node=address, client_id=int(entry["id"]), idle_s=int(entry.get("idle", 0))))
    return out


def lock_holders(opts: ConnectionOptions, addresses: Iterable[str]) -> list[Holder]:
    """A fresh read of every lock connection on every reachable node (one Holder per run, first node seen)."""
    seen: dict[str, Holder] = {}
    for address in sorted(set(addresses)):
        node = Address.of(address)
        client = make_client(opts, node.host, node.port, socket_timeout=5)
        try:
            for holder in _holders_on(client, address):
                seen.setdefault(holder.token, holder)
        except (redis.RedisError, OSError):
            continue
        finally:
            client.close()
    return list(seen.values())


class RunLock:
    """Held lock: one named connection per reachable node, PINGed from a daemon thread."""

    def __init__(self, opts: ConnectionOptions, addresses: Iterable[str], command: str) -> None:
        self.opts, self.command = opts, command
        self.addresses = sorted(set(addresses))
        self.host, self.pid, self.started_at = socket.gethostname(), os.getpid(), time.time()
        self.token = secrets.token_hex(8)
        self.name = encode_name(self.host, self.pid, command, self.started_at, self.token)
        self.clients: dict[str, redis.Redis] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.broken: list[Holder] = []

    def _register(self) -> dict[str, int]:
        ids = {}
        for address in self.addresses:
            node = Address.of(address)
            client = make_client(self.opts, node.host, node.port, socket_timeout=5)
            # every connection the pool (re)opens names itself: a node restarted mid-run gets the lock back
            client.connection_pool.connection_kwargs["client_name"] = self.name
            try:
                ids[address] = int(client.client_id())
            except (redis.RedisError, OSError) as exc:
                client.close()
                if isinstance(exc, redis.exceptions.NoPermissionError) or "noperm" in str(exc).lower():
                    self.release()
                    raise PreconditionError(
                        f"{address}: NOPERM: the Redis user may not hold clusterbak's run lock ({exc}); grant it "
                        "+client|setname +client|id +client|list (and +client|kill for --break-lock), "
                        "see docs/security.md") from exc
                continue
            self.clients[address] = client
        return ids

    def acquire(self, break_lock: bool = False) -> list[Holder]:
        """Register everywhere, then decide; returns the stale holders broken with break_lock."""
        ids = self._register()
        if not ids:
            raise ConnectError("no node of the cluster answered to hold the run lock: "
                               + ", ".join(self.addresses))
        broken: list[Holder] = []
        ahead: list[Holder] = []
        for address, my_id in ids.items():
            try:
                others = [h for h in _holders_on(self.clients[address], address) if h.token != self.token]
            except (redis.RedisError, OSError):
                continue
            for other in others:
                if _dead_here(other):  # its run is over: clean up, never a reason to refuse
                    try:
                        self.clients[address].execute_command("CLIENT", "KILL", "ID", other.client_id)
                    except redis.RedisError:
                        pass
                    continue
                if other.stale and break_lock:
                    try:
                        self.clients[address].execute_command("CLIENT", "KILL", "ID", other.client_id)
                    except redis.RedisError:
                        pass
                    broken.append(other)
                elif other.client_id < my_id or other.stale:
                    ahead.append(other)
        if ahead:
            self.release()
            first = min(ahead, key=lambda h: h.started_at)
            fix = ("rerun with --break-lock to break it" if first.stale
                   else "wait for it to finish, or stop that process")
            raise RunLockHeld(f"another clusterbak run holds this cluster's run lock: {first.describe()}; {fix}")
        _HELD_HERE.add(self.token)
        self._thread = threading.Thread(target=self._heartbeat, name="clusterbak-run-lock", daemon=True)
        self._thread.start()
        return broken

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            for client in list(self.clients.values()):
                try:
                    client.ping()  # a dropped connection is reopened (and renamed) by the pool on the next try
                except (redis.RedisError, OSError):
                    pass

    def release(self) -> None:
        _HELD_HERE.discard(self.token)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=HEARTBEAT_S + 6)
        for client in self.clients.values():
            try:
                client.close()
                client.connection_pool.disconnect()
            except (redis.RedisError, OSError):
                pass
        self.clients = {}


@contextmanager
def cluster_run_lock(opts: ConnectionOptions, addresses: Iterable[str], command: str,
                     break_lock: bool = False, none_up_ok: bool = False) -> Iterator[RunLock]:
    """Hold the cluster's run lock for the body; raises RunLockHeld (exit 3) naming the holder.

    none_up_ok: a restore into nodes that are all stopped has nowhere to hold the lock, and nothing else can run
    against a cluster that is down: it proceeds (the lock is taken on every node that answers)."""
    lock = RunLock(opts, addresses, command)
    try:
        lock.broken = lock.acquire(break_lock)
    except ConnectError:
        if not none_up_ok:
            raise
        lock.broken = []
    try:
        yield lock
    finally:
        lock.release()
