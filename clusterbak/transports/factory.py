"""NodeAccess (from the inventory) -> a Transport. The one place that knows every kind."""

from __future__ import annotations

from clusterbak.errors import TransportError
from clusterbak.model.inventory import NodeAccess
from clusterbak.transports.base import Transport

TEXT_LIMIT = 4 * 1024 * 1024


def open_transport(access: NodeAccess, accept_new_host_keys: bool = False) -> Transport:
    if access.transport == "local":
        from clusterbak.transports.local import LocalTransport

        return LocalTransport()
    if access.transport == "ssh":
        from clusterbak.transports.ssh import SshTransport

        return SshTransport(access.ssh_host or access.host, port=access.ssh_port, user=access.ssh_user,
                            key_file=access.ssh_key, known_hosts=access.known_hosts,
                            accept_new_host_keys=accept_new_host_keys)
    if access.transport == "docker":
        try:
            from clusterbak.transports.docker import DockerTransport
        except ImportError as exc:
            raise TransportError(f"{access.address}: the docker transport is not available in this build") from exc
        return DockerTransport(access.container)
    raise TransportError(f"{access.address}: unknown transport {access.transport!r}")


def read_text(transport: Transport, path: str, limit: int = TEXT_LIMIT) -> str:
    """A small text file (redis.conf, nodes.conf) read through a transport."""
    parts, size = [], 0
    for chunk in transport.read_chunks(path):
        size += len(chunk)
        if size > limit:
            raise TransportError(f"{transport.where}:{path} is larger than {limit} bytes; not a config file")
        parts.append(chunk)
    return b"".join(parts).decode("utf-8", errors="replace")
