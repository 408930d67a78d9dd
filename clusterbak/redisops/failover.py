"""CLUSTER FAILOVER and the gates of a rolling restart, confirmed from every node's own view.

A gate is a function that returns why it is not passed yet (str) or None; `wait_gate` polls it with one
tenacity policy until it passes or the step's time runs out, then raises GateTimeout naming the last reason.
`CLUSTER FAILOVER` answering OK only means *scheduled*: the switch is confirmed from INFO of the two nodes
(the write window) and then from CLUSTER NODES of every node.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import redis
from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

from clusterbak.errors import StepFailed
from clusterbak.model.address import Address
from clusterbak.model.gates import ReplicaSync, sync_refusal
from clusterbak.model.topology import Topology, TopologyParseError, parse_cluster_nodes
from clusterbak.redisops.connect import ConnectionOptions, describe_redis_error, make_client
from clusterbak.redisops.discover import parse_cluster_info
from clusterbak.redisops.info import info_sections

POLL = 0.2  # cluster-wide gates: every node's INFO and CLUSTER NODES
FAST_POLL = 0.03  # the two nodes of a failover, to measure the write window
MF_ATTEMPT = 12.0  # Redis aborts a manual failover after 5 s (CLUSTER_MF_TIMEOUT); then we ask again
MF_MAX_ATTEMPTS = 3  # each failed attempt pauses the master's writers for up to 5 s: do not keep asking


UNREACHABLE_GRACE = 2.0  # a node not handled by the step, unreachable this long, is a fault (a killed one: ~2 s)
WATCH_EVERY = 0.5  # the watchdog reads every node at most this often while a gate polls


class GateTimeout(StepFailed):
    """A gate did not pass within the step timeout; the message names the node and the last reason."""


class ClusterFault(StepFailed):
    """A node the current step does not handle is failing (unreachable, flagged fail/fail?, cluster_state fail)."""

    def __init__(self, message: str, node: str | None = None) -> None:
        super().__init__(message)
        self.node = node


class UnclearFailover(StepFailed):
    """CLUSTER FAILOVER was sent but not answered, and the switch was not seen: it may still happen."""


@dataclass(frozen=True, slots=True)
class Probe:
    """One look at one node: INFO server/replication/persistence, CLUSTER INFO, its CLUSTER NODES."""

    address: str
    error: str | None = None
    info: Mapping[str, object] = field(default_factory=dict)
    cluster_state: str | None = None
    view: Topology | None = None
    refused: bool = False  # the connection was refused: no process listens (a paused one times out instead)

    @property
    def up(self) -> bool:
        return self.error is None

    def num(self, key: str) -> int:
        return self.offset(key) or 0

    def offset(self, key: str) -> int | None:
        """An integer INFO field; None when the node did not report it (or not as a number)."""
        try:
            return int(self.info[key])  # type: ignore[call-overload]  # INFO values: str or int
        except (KeyError, TypeError, ValueError):
            return None

    def replica_sync(self) -> ReplicaSync:
        """This node's INFO replication in the in-sync rule's terms (model/gates)."""
        link = self.info.get("master_link_status")
        return ReplicaSync(self.address, None if link is None else str(link),
                           bool(self.num("master_sync_in_progress")), self.offset("slave_repl_offset"))

    @property
    def run_id(self) -> str | None:
        return str(self.info["run_id"]) if "run_id" in self.info else None

    @property
    def role(self) -> str | None:
        return str(self.info.get("role")) if self.up else None

    @property
    def master_id(self) -> str | None:
        """Whom this node replicates, by its own CLUSTER NODES (myself line)."""
        me = self.view.myself if self.view else None
        return me.master_id if me else None


class Clients:
    """One redis client per address, short timeouts: a hung node must not stall a gate."""

    def __init__(self, conn: ConnectionOptions, socket_timeout: float = 3.0) -> None:
        self.conn, self.timeout = conn, socket_timeout
        self._clients: dict[str, redis.Redis] = {}

    def get(self, address: str) -> redis.Redis:
        if address not in self._clients:
            node = Address.of(address)
            self._clients[address] = make_client(self.conn, node.host, node.port, socket_timeout=self.timeout)
        return self._clients[address]

    def probe(self, address: str, cluster: bool = True) -> Probe:
        client = self.get(address)
        try:
            info = info_sections(client, "server", "replication", "persistence")
            if not cluster:
                return Probe(address, info=info)
            state = parse_cluster_info(client.execute_command("CLUSTER", "INFO")).get("cluster_state")
            view = parse_cluster_nodes(client.execute_command("CLUSTER", "NODES"))
        except (redis.RedisError, OSError, TopologyParseError) as exc:
            refused = isinstance(exc, (redis.ConnectionError, ConnectionRefusedError)) and "refused" in str(exc).lower()
            return Probe(address, error=describe_redis_error(address, exc, self.conn), refused=refused)
        return Probe(address, info=info, cluster_state=state, view=view)

    def time_ms(self, address: str) -> int | None:
        """The node's own clock (TIME), in ms: what its CLUSTER NODES ping/pong times are measured in."""
        try:
            sec, usec = self.get(address).time()
        except (redis.RedisError, OSError):
            return None
        return sec * 1000 + usec // 1000

    def probe_all(self, addresses) -> dict[str, Probe]:
        return {a: self.probe(a) for a in addresses}

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()


Watch = Callable[[], None]  # raises ClusterFault when a node the step does not handle is failing


def wait_gate(check: Callable[[], str | None], timeout: float, what: str, poll: float = POLL,
              watch: Watch | None = None) -> float:
    """Poll `check` until it returns None; returns the seconds waited. Raises GateTimeout with the last reason.

    `watch` runs before every poll: a fault elsewhere in the cluster stops the wait at once (ClusterFault)
    instead of running out the step's timeout on a reason that only follows from it.
    """
    started = time.monotonic()
    retrying = Retrying(stop=stop_after_delay(max(timeout, poll)), wait=wait_fixed(poll),
                        retry=retry_if_result(lambda reason: reason is not None))

    def attempt() -> str | None:
        if watch is not None:
            watch()
        return check()

    try:
        retrying(attempt)
    except RetryError as exc:
        last = exc.last_attempt.result() if not exc.last_attempt.failed else str(exc.last_attempt.exception())
        raise GateTimeout(f"{what}: not passed within {timeout:.0f}s: {last}") from None
    return time.monotonic() - started


# --- gates: pure functions of probes -----------------------------------------------------------------------

def node_up_reason(p: Probe, run_id_before: str | None) -> str | None:
    """The restarted node answers, has loaded its data, and is a new process."""
    if not p.up:
        return p.error
    if p.num("loading"):
        return f"{p.address}: still loading its data (loading:1)"
    if run_id_before and p.run_id == run_id_before:
        return f"{p.address}: run_id is still {run_id_before[:12]}: it has not restarted"
    return None


def replica_reason(p: Probe, master: Probe | None, master_id: str, max_lag: int) -> str | None:
    """A replica of `master_id`, linked, not syncing, caught up."""
    if not p.up:
        return p.error
    if p.role != "slave":
        slots = p.view.myself.slot_count if p.view and p.view.myself else 0
        return (f"{p.address} came back as a {p.role} with {slots} slots, not as a replica "
                "(lost its nodes.conf?)")
    if p.master_id != master_id:
        return f"{p.address} replicates {str(p.master_id)[:8]}, expected {master_id[:8]}"
    sync = p.replica_sync()
    if sync.link == "up" and not sync.syncing and (master is None or not master.up):
        return f"its master {master.address if master else master_id[:8]}: {master.error if master else 'unknown'}"
    return sync_refusal(sync, master.offset("master_repl_offset") if master is not None else None, max_lag)


def links_reason(probes: Mapping[str, Probe], node_id: str, address: str, since_ms: Mapping[str, int]) -> str | None:
    """Every other node has a bus link to the restarted node and heard a PONG from it after it came back.

    Redis 7.0 sends a FAILOVER_AUTH_ACK over the voter's own outbound link and drops it silently when that link
    is not re-established yet: a CLUSTER FAILOVER sent right after a restart then loses its votes and times out.
    `since_ms` is each observer's clock (TIME) read once the node answered again, so clock skew does not matter.
    """
    for observer, since in since_ms.items():
        p = probes.get(observer)
        if p is None or not p.up:
            return p.error if p else f"{observer}: not probed"
        if p.view is None:
            return f"{observer}: its CLUSTER NODES was not read"
        try:
            seen = p.view.by_id(node_id)
        except KeyError:
            return f"{observer} does not know {address}"
        if seen.link_state != "connected":
            return f"{observer} has no cluster bus link to {address} yet"
        if seen.pong_recv < since:
            return f"{observer} has not heard a PONG from the restarted {address} yet"
    return None


def cluster_reason(probes: Mapping[str, Probe], slot_map) -> str | None:
    """cluster_state:ok from every node, every node's slot map as expected, nobody flagged failing."""
    for p in probes.values():
        if not p.up:
            return p.error
        if p.cluster_state != "ok":
            return f"cluster_state is {p.cluster_state} as seen from {p.address}"
        if p.view is None:
            return f"{p.address}: its CLUSTER NODES was not read"
        if p.view.slot_map() != tuple(slot_map):
            seen, want = dict(p.view.slot_map()), dict(slot_map)
            diff = next((r for r in sorted(set(seen) | set(want)) if seen.get(r) != want.get(r)), "?")
            return (f"{p.address}'s slot map differs from the expected one at {diff}: it sees "
                    f"{str(seen.get(diff))[:8]}, expected {str(want.get(diff))[:8]} (gossip not converged yet?)")
        failing = [n for n in p.view.nodes if n.is_failing]
        if failing:
            return f"{p.address} flags {failing[0].address} as {','.join(sorted(failing[0].flags & {'fail', 'fail?'}))}"
    return None


def flags_seen(probes: Mapping[str, Probe], excused: frozenset[str],
               tolerated: frozenset[str] = frozenset()) -> dict[str, tuple[frozenset[str], tuple[str, ...]]]:
    """node -> (its fail/fail? flags, the observers flagging it), from the views that count: not an excused
    node's (it is being restarted), and ignoring a `tolerated` node's flags while it answers us (a node just
    back from a pause keeps its flag a few seconds)."""
    out: dict[str, tuple[set[str], list[str]]] = {}
    for p in probes.values():
        if not p.up or p.address in excused or p.view is None:
            continue
        for n in p.view.nodes:
            if not n.is_failing or n.address in excused:
                continue
            if n.address in tolerated and n.address in probes and probes[n.address].up:
                continue
            flags, observers = out.setdefault(n.address, (set(), []))
            flags.update(n.flags & {"fail", "fail?"})
            observers.append(p.address)
    return {a: (frozenset(f), tuple(o)) for a, (f, o) in out.items()}


def fault_reason(probes: Mapping[str, Probe], excused: frozenset[str], down_since: Mapping[str, float],
                 now: float, grace: float = UNREACHABLE_GRACE, tolerated: frozenset[str] = frozenset(),
                 suspect_since: Mapping[str, float] | None = None,
                 patient: frozenset[str] = frozenset()) -> tuple[str, str] | None:
    """(node, why) when a node not in `excused` is failing, else None. Pure: the caller keeps the timers.

    Failing: flagged `fail` (the masters agreed), flagged `fail?` for `grace` seconds (`suspect_since`: one
    node's opinion, stale for a moment on a node that was paused itself), unreachable from here for `grace`
    seconds, or reporting cluster_state other than ok. A `patient` node (a failover's replica with the command
    pending) may time out (paused, busy) but not refuse connections (its process is gone).
    """
    suspect_since = suspect_since if suspect_since is not None else {}
    for node, (flags, observers) in sorted(flags_seen(probes, excused, tolerated).items(),
                                           key=lambda kv: -len(kv[1][1])):
        if "fail" in flags or now - suspect_since.get(node, now) >= grace:
            return node, (f"{node} is failing: flagged {','.join(sorted(flags))} by {len(observers)} node(s) "
                          f"({', '.join(observers)})")
    for p in probes.values():
        if p.address in patient and not p.refused:
            continue
        if not p.up and p.address not in excused and now - down_since.get(p.address, now) >= grace:
            return p.address, f"{p.address} is down: unreachable for {now - down_since[p.address]:.1f}s ({p.error})"
    for p in probes.values():
        if (
            p.up
            and p.address not in excused
            and p.cluster_state != "ok"
            and not _blames_tolerated(p, probes, tolerated)
        ):
            return p.address, f"cluster_state is {p.cluster_state} as seen from {p.address}"
    return None


def _blames_tolerated(p: Probe, probes: Mapping[str, Probe], tolerated: frozenset[str]) -> bool:
    """cluster_state fail because a tolerated node that answers us is still flagged fail in this view (Redis
    clears FAIL on a master with slots only after 2 x cluster-node-timeout): the step's own gate waits it out."""
    return p.view is not None and any(n.is_failing and n.address in tolerated and n.address in probes
                                      and probes[n.address].up for n in p.view.nodes)


class Watchdog:
    """Reads every node (at most every WATCH_EVERY s) and raises ClusterFault naming a failing node."""

    def __init__(self, clients: Clients, everyone: tuple[str, ...], grace: float = UNREACHABLE_GRACE,
                 every: float = WATCH_EVERY) -> None:
        self.clients, self.everyone, self.grace, self.every = clients, everyone, grace, every
        self._down_since: dict[str, float] = {}
        self._suspect_since: dict[str, float] = {}
        self._last = 0.0

    def __call__(self, excused: frozenset[str] = frozenset(), force: bool = False,
                 tolerated: frozenset[str] = frozenset(), patient: frozenset[str] = frozenset()) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.every:
            return
        self._last = now
        probes = self.clients.probe_all(self.everyone)
        for address, p in probes.items():
            if p.up:
                self._down_since.pop(address, None)
            else:
                self._down_since.setdefault(address, now)
        suspects = {a for a, (flags, _) in flags_seen(probes, excused, tolerated).items() if "fail?" in flags}
        for address in list(self._suspect_since):
            if address not in suspects:
                del self._suspect_since[address]
        for address in suspects:
            self._suspect_since.setdefault(address, now)
        found = fault_reason(probes, excused, self._down_since, time.monotonic(), self.grace, tolerated,
                             self._suspect_since, patient)
        if found:
            node, why = found
            raise ClusterFault(why, node)

    def excusing(self, *addresses: str | None, tolerating: tuple[str, ...] = (),
                 patient_with: tuple[str, ...] = ()) -> Watch:
        excused = frozenset(a for a in addresses if a)
        return lambda: self(excused, tolerated=frozenset(tolerating), patient=frozenset(patient_with))


def switched_reason(promote: Probe, demote: Probe) -> str | None:
    """The two nodes themselves report the switch: the promoted one is writable, the old one redirects."""
    if not promote.up or promote.role != "master":
        return promote.error or f"{promote.address} is still {promote.role}"
    if not demote.up or demote.role != "slave":
        return demote.error or f"{demote.address} is still {demote.role}"
    return None


def roles_agree_reason(probes: Mapping[str, Probe], promote_id: str, demote_id: str) -> str | None:
    """Every node's CLUSTER NODES shows promote as a master and demote as its replica."""
    for p in probes.values():
        if not p.up:
            return p.error
        if p.view is None:
            return f"{p.address}: its CLUSTER NODES was not read"
        try:
            new, old = p.view.by_id(promote_id), p.view.by_id(demote_id)
        except KeyError as exc:
            return f"{p.address} does not know node {str(exc)[:10]}"
        if not new.is_master:
            return f"{p.address} still sees {new.address} as {new.role}"
        if old.master_id != promote_id:
            return f"{p.address} sees {old.address} as {old.role} of {str(old.master_id)[:8]}"
    return None


# --- actions --------------------------------------------------------------------------------------------------

def cluster_failover(client: redis.Redis, address: str, force: bool = False) -> bool:
    """Send CLUSTER FAILOVER; True when answered OK, False when sent but not answered (it may be queued).

    A refusal (an error reply) or a connection that could not be made raises StepFailed: nothing was asked.
    """
    args = ("CLUSTER", "FAILOVER", "FORCE") if force else ("CLUSTER", "FAILOVER")
    try:
        client.execute_command(*args)
        return True
    except redis.TimeoutError:  # written to the socket, no reply: a paused node runs it when it resumes
        return False
    except (redis.RedisError, OSError) as exc:
        raise StepFailed(f"{address}: {' '.join(args)} refused: {describe_redis_error(address, exc)}") from exc


@dataclass(frozen=True, slots=True)
class Switch:
    window_s: float  # CLUSTER FAILOVER sent -> new master writable and the old one redirecting
    confirm_s: float  # -> every node's CLUSTER NODES agrees
    attempts: int


def failover_and_confirm(clients: Clients, promote: str, promote_id: str, demote: str, demote_id: str,
                         everyone: tuple[str, ...], slot_map, timeout: float, force: bool = False,
                         watchdog: Watchdog | None = None, on_sent: Callable[[], None] = lambda: None) -> Switch:
    """Ask `promote` to take over from `demote` and confirm it. While the switch is pending only `promote` may be
    unreachable or flagged (a paused node runs a queued CLUSTER FAILOVER when it resumes); once switched every
    node must be healthy again. A failover sent but never answered is not asked again: it would queue twice."""
    deadline = time.monotonic() + timeout
    attempts, unanswered = 0, False
    pending = watchdog.excusing(tolerating=(promote,), patient_with=(promote,)) if watchdog else None

    def switched() -> str | None:
        return switched_reason(clients.probe(promote, cluster=False), clients.probe(demote, cluster=False))

    sent = time.monotonic()
    while True:
        if switched() is None:  # an earlier attempt went through late: do not ask a master to fail over
            break
        if not unanswered:
            attempts += 1
            sent = time.monotonic()
            on_sent()
            unanswered = not cluster_failover(clients.get(promote), promote, force)
        try:
            wait_gate(switched, min(MF_ATTEMPT, deadline - time.monotonic()), f"failover to {promote}", FAST_POLL,
                      pending)
            break
        except GateTimeout as exc:
            if unanswered and not clients.probe(promote, cluster=False).up:
                raise UnclearFailover(f"{promote} did not answer CLUSTER FAILOVER and is still unreachable; the "
                                      f"failover may still happen when it answers again ({exc})") from None
            unanswered = False  # it answers now and is still a replica: that request has ended
            if attempts >= MF_MAX_ATTEMPTS or deadline - time.monotonic() < MF_ATTEMPT / 2:
                raise GateTimeout(f"{exc} (CLUSTER FAILOVER asked {attempts} times)") from None
    window = time.monotonic() - sent
    confirm_switch(clients, promote, promote_id, demote_id, everyone, slot_map, deadline - time.monotonic(),
                   watchdog.excusing(tolerating=(promote,)) if watchdog else None)
    return Switch(window, time.monotonic() - sent, attempts)


def confirm_switch(clients: Clients, promote: str, promote_id: str, demote_id: str, everyone: tuple[str, ...],
                   slot_map, timeout: float, watch: Watch | None = None) -> float:
    """Wait until every node's CLUSTER NODES shows the switch and the cluster is ok with the expected slot map."""

    def agreed() -> str | None:
        probes = clients.probe_all(everyone)
        return roles_agree_reason(probes, promote_id, demote_id) or cluster_reason(probes, slot_map)

    return wait_gate(agreed, max(1.0, timeout), f"failover to {promote} confirmed by every node", watch=watch)
