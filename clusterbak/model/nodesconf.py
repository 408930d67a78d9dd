"""nodes.conf rewriting for restores to new addresses. Pure.

Every node line's address field `ip:port@cport[,hostname[,aux...]]` is rewritten through one mapping,
in every node's file alike; node ids, flags, epochs, slots and the `vars currentEpoch ... lastVoteEpoch ...`
line are kept byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass

from clusterbak.errors import NodesConfError as NodesConfError
from clusterbak.model.address import Address  # raised here (exit 4, errors.py)


@dataclass(frozen=True, slots=True)
class NewAddress:
    host: str
    port: int
    cport: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def parse_new_address(text: str) -> NewAddress:
    """`host:port[@cport]`; the bus port defaults to port + 10000 as Redis does."""
    addr, _, cport = text.partition("@")
    address = Address.parse(addr)
    if address is None or (cport and not cport.isdigit()):
        raise NodesConfError(f"{text!r} is not host:port[@cport]")
    return NewAddress(address.host, address.port, int(cport) if cport else address.port + 10000)


def rewrite(text: str, by_node_id: dict[str, NewAddress]) -> str:
    out = []
    for line in text.splitlines(keepends=True):
        parts = line.split(" ")
        if not line.strip() or parts[0] == "vars":
            out.append(line)
            continue
        if len(parts) < 8:
            raise NodesConfError(f"nodes.conf line has {len(parts)} fields: {line.strip()!r}")
        new = by_node_id.get(parts[0])
        if new is None:
            raise NodesConfError(f"node {parts[0]} in nodes.conf has no new address in the mapping")
        _, comma, rest = parts[1].partition(",")
        parts[1] = f"{new.host}:{new.port}@{new.cport}" + (comma + rest if comma else "")
        out.append(" ".join(parts))
    return "".join(out)


def addresses(text: str) -> dict[str, str]:
    """node id -> ip:port as written in a nodes.conf."""
    found = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 8 and parts[0] != "vars":
            found[parts[0]] = parts[1].split("@", 1)[0]
    return found
