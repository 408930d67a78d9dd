"""Restart, stop or start the Redis service of one node: the inventory's command when it gives one, else the
transport's own way (a Docker container is restarted, stopped or started through the Engine API).

    service_action(access, transport, "restart", node_id=..., timeout=120)

A command runs through the node's transport (`sh -c` on its host, or inside its container for docker). For a
docker node, leave the commands out: killing redis-server from inside a container ends the container.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from clusterbak.errors import TransportError
from clusterbak.model.inventory import NodeAccess
from clusterbak.transports.base import Transport

ACTIONS = ("restart", "stop", "start")


@runtime_checkable
class ServiceControl(Protocol):
    """A transport that can restart/stop/start the node's service itself (DockerTransport)."""

    def restart(self, timeout: float = 60.0) -> None: ...

    def stop(self, timeout: float = 60.0) -> None: ...

    def start(self, timeout: float = 60.0) -> None: ...


def describe(access: NodeAccess, action: str, node_id: str = "", data_dir: str = "") -> str | None:
    """What service_action would do, for a plan or a dry run; None when the node has no way to do it."""
    _check(action)
    command = access.command(f"{action}_command", node_id, data_dir)
    if command:
        return command
    if access.transport == "docker":
        return f"{action} container {access.container} (Docker Engine API)"
    return None


def service_action(access: NodeAccess, transport: Transport, action: str, *, node_id: str = "",
                   data_dir: str = "", timeout: float = 120.0) -> str:
    """Do it and return what was done (the command, or `docker restart NAME`); raises TransportError."""
    _check(action)
    command = access.command(f"{action}_command", node_id, data_dir)
    if command:
        transport.run(command, timeout=timeout)
        return command
    if isinstance(transport, ServiceControl):
        getattr(transport, action)(timeout=timeout)
        return f"{action} ({transport.where})"
    raise TransportError(f"{access.address}: the inventory gives no {action}_command and {transport.where} "
                         f"cannot {action} the service by itself; add {action}_command for this node")


def _check(action: str) -> None:
    if action not in ACTIONS:
        raise ValueError(f"unknown service action {action!r}")
