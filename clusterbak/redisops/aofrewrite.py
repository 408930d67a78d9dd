"""BGREWRITEAOF on one node with its settings pinned, and always put back.

While we copy the AOF no automatic rewrite may swap files under us: auto-aof-rewrite-percentage is set to 0
(and with relax_fsync, appendfsync no). Whatever happens - success, failure, Ctrl-C - the old values are set
again and read back; if that fails the error says exactly which CONFIG SET to run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis
from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from clusterbak.errors import AccessRefused, PreconditionError, RunCancelled, StepFailed
from clusterbak.model.address import Address
from clusterbak.redisops.connect import describe_redis_error
from clusterbak.storage.pins import PinRecord, read_pin, record_path, remove_pin, write_pin

POLL = 0.1


@dataclass(frozen=True, slots=True)
class RewriteResult:
    address: str
    rewrites_before: int
    rewrites_after: int
    waited_for_foreign_rewrite: bool
    duration_s: float
    finished_at: float


def _config_get(client: redis.Redis, key: str) -> str:
    reply = client.config_get(key)
    return str(reply.get(key, ""))


class SettingsNotRestored(StepFailed):
    """The node's settings could not be put back: the message holds the exact CONFIG SET to run."""


def aof_config(client: redis.Redis) -> dict[str, str]:
    """dir, appenddirname and appendfilename as CONFIG GET answers them ("" when a server does not know one)."""
    return {k: str(client.config_get(k).get(k, "")) for k in ("dir", "appenddirname", "appendfilename")}


def keyspace_counts(client: redis.Redis) -> tuple[int, int]:
    """(keys, expires) of db0 from INFO keyspace."""
    db0 = client.info("keyspace").get("db0", {})
    return int(db0.get("keys", 0)), int(db0.get("expires", 0))


@contextmanager
def pinned_settings(client: redis.Redis, address: str, relax_fsync: bool) -> Iterator[dict[str, str]]:
    """Pin for the body; always put back. The originals come from a pin record left by an earlier run when there
    is one (this node may still carry that run's pinned values), else from the node - and they are written to a
    new record before the first CONFIG SET. The record goes only once the originals are set and read back."""
    wanted = {"auto-aof-rewrite-percentage": "0", **({"appendfsync": "no"} if relax_fsync else {})}
    earlier = read_pin(address)
    live = {k: _config_get(client, k) for k in wanted}
    originals = {**live, **(earlier.originals if earlier else {})}
    try:
        node_id = str(client.execute_command("CLUSTER", "MYID"))
    except redis.RedisError:
        node_id = None
    write_pin(PinRecord(address=address, originals=originals, pinned=wanted, node_id=node_id))
    try:
        for key, value in wanted.items():
            client.config_set(key, value)
        yield originals
    except BaseException as exc:
        try:
            put_back(client, address, originals)
        except SettingsNotRestored as undo:  # the cause first, then what to run
            cause = describe_redis_error(address, exc) if isinstance(exc, (redis.RedisError, OSError)) else \
                (str(exc) or type(exc).__name__)
            raise SettingsNotRestored(f"{cause}; then {undo}") from exc
        raise
    put_back(client, address, originals)


def put_back(client: redis.Redis, address: str, saved: dict[str, str]) -> None:
    """Set the originals, read each back, then drop the pin record; else raise naming the CONFIG SETs to run."""
    problems = []
    for key, value in saved.items():
        for _ in range(3):
            try:
                client.config_set(key, value)
                if _config_get(client, key) == value:
                    break
            except (redis.RedisError, OSError):
                time.sleep(0.5)
        else:
            problems.append(f"CONFIG SET {key} {value!r}")
    if problems:
        node = Address.of(address)
        host, port = node.host, node.port
        raise SettingsNotRestored(f"{address}: COULD NOT RESTORE SETTINGS (kept in {record_path(address)}); "
                                  "when the node is back run `clusterbak unpin`, or: "
                                  + "; ".join(f"redis-cli -h {host} -p {port} {p}" for p in problems))
    remove_pin(address)


def _read(client: redis.Redis) -> dict:
    return client.info("persistence")


def _wait(client: redis.Redis, done, timeout: float, what: str, address: str,
          cancelled: Callable[[], bool] = lambda: False) -> dict:
    retrying = Retrying(stop=stop_after_delay(max(timeout, POLL)), wait=wait_fixed(POLL),
                        retry=retry_if_result(lambda p: not done(p) and not cancelled()))
    try:
        state = retrying(_read, client)
    except RetryError as exc:
        raise StepFailed(f"{address}: {what} did not finish within {timeout:.0f}s; raise --timeout") from exc
    if not done(state):
        raise RunCancelled(f"{address}: stopped waiting for {what}: the backup was cancelled")
    return state


def _busy(p: dict) -> bool:
    return bool(int(p.get("aof_rewrite_in_progress", 0)) or int(p.get("aof_rewrite_scheduled", 0)))


def rewrite_and_wait(client: redis.Redis, address: str, timeout: float = 600.0,
                     cancelled: Callable[[], bool] = lambda: False) -> RewriteResult:
    t0 = time.monotonic()
    deadline = t0 + timeout
    waited = False
    before = _read(client)
    if not int(before.get("aof_enabled", 0)):
        raise PreconditionError(f"{address}: appendonly is no; an AOF backup needs a replica with appendonly yes")
    while True:
        before = _read(client)
        if _busy(before):
            waited = True
            _wait(
                client,
                lambda p: not _busy(p),
                deadline - time.monotonic(),
                "a rewrite already running",
                address,
                cancelled,
            )
            continue
        try:
            client.execute_command("BGREWRITEAOF")
        except redis.ResponseError as exc:
            if "already in progress" in str(exc).lower():
                waited = True
                continue
            if isinstance(exc, redis.exceptions.NoPermissionError):  # the user lacks the right: a precondition
                raise AccessRefused(describe_redis_error(address, exc)) from exc
            raise StepFailed(f"{address}: BGREWRITEAOF refused: {exc}") from exc
        break
    count = int(before.get("aof_rewrites", -1))

    def done(p: dict) -> bool:
        return not _busy(p) and int(p.get("aof_rewrites", 0)) > count

    after = _wait(client, done, deadline - time.monotonic(), "our AOF rewrite", address, cancelled)
    if after.get("aof_last_bgrewrite_status") != "ok":
        raise StepFailed(f"{address}: BGREWRITEAOF failed (aof_last_bgrewrite_status:"
                         f"{after.get('aof_last_bgrewrite_status')}); see the node's log")
    return RewriteResult(address, count, int(after.get("aof_rewrites", 0)), waited, time.monotonic() - t0, time.time())
