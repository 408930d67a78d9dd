"""host:port, split in one place. Pure.

The host is kept as written (an IPv6 host keeps its brackets, as CLUSTER NODES and the inventory write it);
`bare_host` drops them for a socket. CLUSTER NODES' own field (`ip:port@cport`, where a node without an address shows
`:0`) is parsed leniently by model/topology.py."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    @staticmethod
    def parse(text: str) -> Address | None:
        """`host:port` split at the last colon; None unless there is a host and a port in 1-65535. The caller
        raises its own typed error, naming where the text came from."""
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            return None
        return Address(host, int(port))

    @staticmethod
    def of(text: str) -> Address:
        """Split an address that was checked where it entered (an inventory key, a plan's address, a topology
        node's, which may be CLUSTER NODES' `:0` for a node without one): no check here."""
        host, _, port = text.rpartition(":")
        return Address(host, int(port))

    @property
    def bare_host(self) -> str:
        return self.host.strip("[]")

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"
