"""BGSAVE on one node and know for sure when *that* save finished (seed 000, without inotify).

Done means: rdb_bgsave_in_progress:0, rdb_saves advanced past the value read before our BGSAVE was
accepted, rdb_last_save_time >= the server time at which we asked, rdb_last_bgsave_status:ok.
A save already running is waited out first, then ours is taken, so a foreign save can never be
mistaken for ours.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay

from clusterbak.errors import AccessRefused, RunCancelled, StepFailed
from clusterbak.redisops.connect import describe_redis_error

POLL = 0.1  # the longest pause between two INFO persistence polls: a long save costs 10 polls/s
POLL_FIRST = 0.005  # the shortest pause
POLL_SHARE = 0.1  # each pause is this share of the time waited so far: a save is seen done at most ~10% (or
# POLL_FIRST) after it ended. Redis itself notices its child's end only at a serverCron tick (hz 10: a small save
# takes ~0.1 s); the doubling pauses used before (5, 10, 20, 40, 80 ms) saw such a save only at ~0.16 s, and
# the saves on one host run one after another, so that waste added up per shard.


def poll_pause(waited: float) -> float:
    """Seconds to pause before the next INFO persistence, after `waited` seconds of waiting."""
    return min(POLL, max(POLL_FIRST, POLL_SHARE * waited))


@dataclass(frozen=True, slots=True)
class SaveResult:
    address: str
    requested_at: float  # server clock (TIME) when BGSAVE was accepted
    finished_at: float  # server clock when we saw the save done
    last_save_time: int  # rdb_last_save_time
    rdb_saves_before: int
    rdb_saves_after: int
    scheduled: bool  # BGSAVE SCHEDULE because an AOF rewrite was running
    waited_for_foreign_save: bool
    duration_s: float
    repl_offset: int | None  # the node's offset when the save was accepted
    master_replid: str | None
    cow_bytes: int | None = None  # rdb_last_cow_size after our save: the fork's copy-on-write (None: not reported)


@dataclass(frozen=True, slots=True)
class _Persistence:
    in_progress: bool
    scheduled: bool
    saves: int
    last_save_time: int
    status: str
    aof_rewrite: bool
    cow_bytes: int | None = None

    @staticmethod
    def read(client: redis.Redis) -> _Persistence:
        info = client.info("persistence")
        saves = info.get("rdb_saves")
        return _Persistence(
            in_progress=bool(int(info.get("rdb_bgsave_in_progress", 0))),
            scheduled=bool(int(info.get("rdb_bgsave_scheduled", 0) or 0)),
            saves=int(saves) if saves is not None else -1,
            last_save_time=int(info.get("rdb_last_save_time", 0)),
            status=str(info.get("rdb_last_bgsave_status", "ok")),
            aof_rewrite=bool(int(info.get("aof_rewrite_in_progress", 0))),
            cow_bytes=int(info["rdb_last_cow_size"]) if "rdb_last_cow_size" in info else None,
        )


def _wait(client: redis.Redis, done, timeout: float, what: str, address: str,
          cancelled: Callable[[], bool] = lambda: False) -> _Persistence:
    """The one wait policy for saves: poll INFO persistence (poll_pause: POLL_SHARE of the time waited so far,
    between POLL_FIRST and POLL) until done, cancelled or timeout."""
    retrying = Retrying(stop=stop_after_delay(max(timeout, POLL)),
                        wait=lambda state: poll_pause(state.seconds_since_start or 0.0),
                        retry=retry_if_result(lambda p: not done(p) and not cancelled()))
    try:
        state = retrying(_Persistence.read, client)
    except RetryError as exc:
        raise StepFailed(f"{address}: {what} did not finish within {timeout:.0f}s; "
                         "raise --timeout or look at the node's load and log") from exc
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:  # the host vanished or froze mid-save
        raise StepFailed(f"{address}: lost the node while waiting for {what} ({type(exc).__name__}: {exc}); "
                         "nothing of this shard was kept: check the host and its network, then run the backup "
                         "again") from exc
    if not done(state):
        raise RunCancelled(f"{address}: stopped waiting for {what}: the backup was cancelled")
    return state


def server_time(client: redis.Redis) -> float:
    sec, usec = client.time()
    return sec + usec / 1e6


def bgsave_and_wait(client: redis.Redis, address: str, timeout: float = 600.0, logfile_hint: str = "",
                    cancelled: Callable[[], bool] = lambda: False) -> SaveResult:
    """`cancelled` is asked at every poll: once another shard failed, nobody waits here for a save it won't use."""
    t_start = time.monotonic()
    waited = False
    deadline = t_start + timeout
    while True:
        before = _Persistence.read(client)
        if before.in_progress or before.scheduled:
            waited = True
            _wait(client, lambda p: not p.in_progress and not p.scheduled, deadline - time.monotonic(),
                  "a BGSAVE that was already running", address, cancelled)
            continue
        asked_at = server_time(client)
        if before.saves < 0 and before.last_save_time >= int(asked_at):
            # no rdb_saves (Redis < 7.0) and a save ended this very second: LASTSAVE has 1 s resolution, so ours
            # could end in the same second and look like no save at all. Ask in the next second instead.
            time.sleep(min(1.0, int(asked_at) + 1 - asked_at + 0.01))
            continue
        repl = client.info("replication")
        schedule = before.aof_rewrite
        try:
            reply = client.execute_command("BGSAVE", "SCHEDULE") if schedule else client.execute_command("BGSAVE")
        except redis.ResponseError as exc:
            if "already in progress" in str(exc).lower():
                waited = True
                continue  # someone else's save won the race: wait it out, then take ours
            if isinstance(exc, redis.exceptions.NoPermissionError):  # the user lacks the right: a precondition
                raise AccessRefused(describe_redis_error(address, exc)) from exc
            raise StepFailed(f"{address}: BGSAVE refused: {exc}") from exc
        if "scheduled" in str(reply).lower():
            schedule = True
        break
    if before.saves >= 0:
        def done(p: _Persistence) -> bool:
            return not p.in_progress and not p.scheduled and p.saves > before.saves
    else:  # before Redis 7.0 there is no rdb_saves: LASTSAVE must move past our request
        def done(p: _Persistence) -> bool:
            return not p.in_progress and not p.scheduled and p.last_save_time >= int(asked_at) \
                and p.last_save_time > before.last_save_time
    after = _wait(client, done, max(1.0, deadline - time.monotonic()), "our BGSAVE", address, cancelled)
    if after.status != "ok":
        hint = f" ({logfile_hint})" if logfile_hint else ""
        raise StepFailed(f"{address}: BGSAVE failed (rdb_last_bgsave_status:{after.status}); "
                         f"see the node's log{hint} - a full disk or a dir it cannot write is the usual cause")
    if after.last_save_time < int(asked_at):
        raise StepFailed(f"{address}: rdb_last_save_time {after.last_save_time} is older than our request "
                         f"{int(asked_at)}; refusing a snapshot that is not ours")
    offset_key = "slave_repl_offset" if repl.get("role") == "slave" else "master_repl_offset"
    return SaveResult(
        address=address, requested_at=asked_at, finished_at=server_time(client),
        last_save_time=after.last_save_time,
        rdb_saves_before=before.saves, rdb_saves_after=after.saves, scheduled=schedule,
        # rdb_saves counts saves *started*: two or more since `before` means a foreign save started after ours and
        # we waited for it to end too (seed 000's race)
        waited_for_foreign_save=waited or (before.saves >= 0 and after.saves - before.saves > 1),
        duration_s=time.monotonic() - t_start,
        repl_offset=int(repl[offset_key]) if offset_key in repl else None,
        master_replid=repl.get("master_replid"), cow_bytes=after.cow_bytes,
    )
