"""The ways into the nodes' hosts a run uses, opened once and shared; the engines are handed a pool, they do not
open transports themselves."""

from __future__ import annotations

import threading
from types import TracebackType

from clusterbak.model.inventory import Inventory, NodeAccess
from clusterbak.transports.base import Transport
from clusterbak.transports.factory import open_transport


class TransportPool:
    """One open transport per distinct way in (transport kind, host, port, user, key, container), shared by the
    callers of `get`: nodes on one host cost one connection, not one each. `fresh` opens one the caller owns (a
    long transfer that should not share). Thread-safe; `close` (or leaving the `with`) closes the shared ones.
    Different ways in open at once (an SSH handshake to one host never waits for another's); one way in opens once."""

    def __init__(self, inventory: Inventory, accept_new_host_keys: bool = False) -> None:
        self.inventory, self.accept = inventory, accept_new_host_keys
        self._open: dict[tuple, Transport] = {}
        self._opening: dict[tuple, threading.Lock] = {}  # per way in: the first caller opens, the others wait
        self._lock = threading.Lock()  # guards the two dicts, never held while a transport opens

    @staticmethod
    def key(access: NodeAccess) -> tuple:
        if access.transport == "local":
            return ("local",)
        return (access.transport, access.ssh_host or access.host, access.ssh_port, access.ssh_user, access.ssh_key,
                access.known_hosts, access.container)

    def key_of(self, address: str) -> tuple:
        return self.key(self.inventory.access(address))

    def get(self, address: str) -> Transport:
        """The shared transport to `address`'s host (opened on first use)."""
        access = self.inventory.access(address)
        key = self.key(access)
        with self._lock:
            transport = self._open.get(key)
            if transport is not None:
                return transport
            opening = self._opening.setdefault(key, threading.Lock())
        with opening:
            with self._lock:
                transport = self._open.get(key)
            if transport is None:
                transport = open_transport(access, self.accept)
                with self._lock:
                    self._open[key] = transport
            return transport

    def fresh(self, address: str) -> Transport:
        """A transport of its own to `address`'s host: the caller closes it."""
        return open_transport(self.inventory.access(address), self.accept)

    def close(self) -> None:
        with self._lock:
            opened, self._open = list(self._open.values()), {}
        for transport in opened:
            transport.close()

    def __enter__(self) -> TransportPool:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
