"""CLUSTER NODES parsed into frozen snapshots, grouped into shards.

Line format (Redis 7 cluster.c, clusterGenNodeDescription):
  <id> <ip:port@cport[,hostname[,aux=val...]]> <flags> <master|-> <ping> <pong> <epoch> <link> <slot>...
where a slot is N, N-M, [N->-id] (migrating) or [N-<-id] (importing).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from clusterbak.errors import TopologyParseError as TopologyParseError  # raised here (exit 3, errors.py)
from clusterbak.model.names import HOST, NODE_ID

SLOT_COUNT = 16384




@dataclass(frozen=True, slots=True)
class SlotRange:
    start: int
    end: int

    def __post_init__(self) -> None:
        if not (0 <= self.start <= self.end < SLOT_COUNT):
            raise TopologyParseError(f"slot range {self.start}-{self.end} outside 0-{SLOT_COUNT - 1}")

    @property
    def count(self) -> int:
        return self.end - self.start + 1

    def __str__(self) -> str:
        return str(self.start) if self.start == self.end else f"{self.start}-{self.end}"


@dataclass(frozen=True, slots=True)
class OpenSlot:
    """A slot being moved: direction 'migrating' (to peer) or 'importing' (from peer)."""

    slot: int
    direction: str
    peer_id: str


@dataclass(frozen=True, slots=True)
class Node:
    node_id: str
    host: str
    port: int
    cport: int
    hostname: str
    flags: frozenset[str]
    master_id: str | None
    ping_sent: int
    pong_recv: int
    config_epoch: int
    link_state: str
    slots: tuple[SlotRange, ...] = ()
    open_slots: tuple[OpenSlot, ...] = ()
    aux: tuple[tuple[str, str], ...] = ()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def short_id(self) -> str:
        return self.node_id[:8]

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def is_replica(self) -> bool:
        return "slave" in self.flags

    @property
    def is_myself(self) -> bool:
        return "myself" in self.flags

    @property
    def is_failing(self) -> bool:
        return "fail" in self.flags or "fail?" in self.flags

    @property
    def role(self) -> str:
        return "master" if self.is_master else "replica" if self.is_replica else "unknown"

    @property
    def slot_count(self) -> int:
        return sum(r.count for r in self.slots)


@dataclass(frozen=True, slots=True)
class Shard:
    master: Node
    replicas: tuple[Node, ...]

    @property
    def slots(self) -> tuple[SlotRange, ...]:
        return self.master.slots

    @property
    def nodes(self) -> tuple[Node, ...]:
        return (self.master, *self.replicas)


@dataclass(frozen=True, slots=True)
class Topology:
    nodes: tuple[Node, ...]
    shards: tuple[Shard, ...] = field(default=())

    def by_id(self, node_id: str) -> Node:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(node_id)

    def by_address(self, address: str) -> Node | None:
        return next((n for n in self.nodes if n.address == address), None)

    @property
    def myself(self) -> Node | None:
        return next((n for n in self.nodes if n.is_myself), None)

    def uncovered_slots(self) -> tuple[SlotRange, ...]:
        return uncovered(n.slots for n in self.nodes if n.is_master and "fail" not in n.flags)

    def open_slots(self) -> tuple[tuple[Node, OpenSlot], ...]:
        return tuple((n, s) for n in self.nodes for s in n.open_slots)

    def slot_owners(self) -> tuple[tuple[int, int, str], ...]:
        """(start, end, owner id) sorted: slot_map's content without formatting, for comparing many views fast."""
        return tuple(sorted((r.start, r.end, n.node_id) for n in self.nodes if "master" in n.flags for r in n.slots))

    def slot_map(self) -> tuple[tuple[str, str], ...]:
        """(range, owner id) pairs sorted by slot: what nodes must agree on."""
        pairs = [(r, n.node_id) for n in self.nodes if n.is_master for r in n.slots]
        return tuple((str(r), nid) for r, nid in sorted(pairs, key=lambda p: p[0].start))


def uncovered(ranges_by_node: Iterable[Iterable[SlotRange]]) -> tuple[SlotRange, ...]:
    covered = bytearray(SLOT_COUNT)
    for ranges in ranges_by_node:
        for r in ranges:
            covered[r.start : r.end + 1] = b"\x01" * r.count
    return compress_slots(i for i in range(SLOT_COUNT) if not covered[i])


def compress_slots(slots: Iterable[int]) -> tuple[SlotRange, ...]:
    out: list[SlotRange] = []
    start: int | None = None
    prev = 0
    for s in slots:
        if start is None:
            start = prev = s
        elif s == prev + 1:
            prev = s
        else:
            out.append(SlotRange(start, prev))
            start = prev = s
    if start is not None:
        out.append(SlotRange(start, prev))
    return tuple(out)


def parse_address(field_text: str) -> tuple[str, int, int, str, tuple[tuple[str, str], ...]]:
    """`ip:port@cport[,hostname[,key=value...]]` -> (ip, port, cport, hostname, aux).

    IPv6 addresses are printed without brackets, so split on the last colon.
    """
    addr, _, extra = field_text.partition(",")
    hostname = ""
    aux: list[tuple[str, str]] = []
    if extra:
        parts = extra.split(",")
        if parts and "=" not in parts[0]:
            hostname = parts.pop(0)
        for part in parts:
            key, _, value = part.partition("=")
            aux.append((key, value))
    hostport, _, cport_text = addr.partition("@")
    host, sep, port_text = hostport.rpartition(":")
    if not sep or not port_text.isdigit():
        raise TopologyParseError(f"address {field_text!r} is not ip:port@cport")
    cport = int(cport_text) if cport_text.isdigit() else 0
    return host.strip("[]"), int(port_text), cport, hostname, tuple(aux)


def _parse_slot(token: str, node_id: str) -> SlotRange | OpenSlot:
    if token.startswith("["):
        body = token.strip("[]")
        if "->-" in body:
            slot, peer = body.split("->-", 1)
            return OpenSlot(int(slot), "migrating", peer)
        if "-<-" in body:
            slot, peer = body.split("-<-", 1)
            return OpenSlot(int(slot), "importing", peer)
        raise TopologyParseError(f"node {node_id}: bad open-slot marker {token!r}")
    start, _, end = token.partition("-")
    try:
        return SlotRange(int(start), int(end or start))
    except ValueError as exc:
        raise TopologyParseError(f"node {node_id}: bad slot {token!r}") from exc


def parse_node_line(line: str) -> Node:
    parts = line.split()
    if len(parts) < 8:
        raise TopologyParseError(f"CLUSTER NODES line has {len(parts)} fields, need 8: {line!r}")
    node_id, addr, flags_text, master, ping, pong, epoch, link, *slot_tokens = parts
    # a node's reply is untrusted: ids and hosts end up in file names and commands, so they must have their shape
    if not NODE_ID.fullmatch(node_id) or not (master == "-" or NODE_ID.fullmatch(master)):
        raise TopologyParseError(f"CLUSTER NODES line has a node id that is not 40 hex characters: {line[:120]!r}")
    host, port, cport, hostname, aux = parse_address(addr)
    if host and not HOST.fullmatch(host):
        raise TopologyParseError(f"CLUSTER NODES line has a host with characters an address cannot have: "
                                 f"{line[:120]!r}")
    flags = frozenset(f for f in flags_text.split(",") if f)
    ranges: list[SlotRange] = []
    opened: list[OpenSlot] = []
    for token in slot_tokens:
        parsed = _parse_slot(token, node_id)
        if isinstance(parsed, OpenSlot):
            opened.append(parsed)
        else:
            ranges.append(parsed)
    try:
        return Node(
            node_id=node_id, host=host, port=port, cport=cport, hostname=hostname, flags=flags,
            master_id=None if master == "-" else master, ping_sent=int(ping), pong_recv=int(pong),
            config_epoch=int(epoch), link_state=link, slots=tuple(ranges), open_slots=tuple(opened),
            aux=aux,
        )
    except ValueError as exc:
        raise TopologyParseError(f"node {node_id}: non-numeric ping/pong/epoch in {line!r}") from exc


def parse_cluster_nodes(text: str) -> Topology:
    nodes = tuple(parse_node_line(line) for line in text.splitlines() if line.strip())
    if not nodes:
        raise TopologyParseError("CLUSTER NODES returned no nodes")
    return build_topology(nodes)


def build_topology(nodes: tuple[Node, ...]) -> Topology:
    """Linear in the nodes (a 1,000-node cluster is parsed once per probed node: no pairwise scans here)."""
    masters = sorted((n for n in nodes if n.is_master), key=_shard_order)
    replicas_of: dict[str, list[Node]] = {}
    for n in nodes:
        if n.master_id is not None:
            replicas_of.setdefault(n.master_id, []).append(n)
    shards = tuple(Shard(m, tuple(sorted(replicas_of.get(m.node_id, ()), key=lambda r: (r.host, r.port))))
                   for m in masters)
    ordered = tuple(n for s in shards for n in s.nodes)
    placed = {id(n) for n in ordered}
    orphans = tuple(sorted((n for n in nodes if id(n) not in placed), key=lambda n: (n.host, n.port)))
    return Topology(nodes=ordered + orphans, shards=shards)


def _shard_order(node: Node) -> tuple[int, str, int]:
    first = node.slots[0].start if node.slots else SLOT_COUNT
    return (first, node.host, node.port)
