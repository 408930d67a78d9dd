"""`--docker` discovery: which running container serves each cluster node's address.

A container serves HOST:PORT when
  - it publishes PORT on the engine's host (NetworkSettings.Ports), or
  - it runs on the host network and its redis-server listens on PORT, or
  - one of its own networks gives it the IP HOST and its redis-server listens on PORT.
The redis-server port comes from the container's command line (`--port N`), else from the `port` line of the
config file named there (read through the container), else 6379. One engine (DOCKER_HOST) is assumed to run
every node; an address no running container serves, or that two serve, is an error naming them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import docker
import docker.errors

from clusterbak.errors import InventoryError, TransportError
from clusterbak.model.address import Address
from clusterbak.model.inventory import Inventory, NodeAccess, inventory_toml
from clusterbak.transports.docker import ENGINE_LOST, DockerTransport, engine_client
from clusterbak.transports.factory import read_text

REDIS_DEFAULT_PORT = 6379


@dataclass(frozen=True, slots=True)
class Served:
    container: str
    host_ports: frozenset[int]  # on the engine's host: published, or the host network's listening port
    addresses: frozenset[str]  # IP:PORT on the container's own networks


def served_by(container, client: docker.DockerClient) -> Served:
    attrs = container.attrs
    args = [*(attrs.get("Config", {}).get("Entrypoint") or []), *(attrs.get("Config", {}).get("Cmd") or [])]
    port = redis_port(args, lambda path: read_text(DockerTransport(container.name, client=client), path))
    net = attrs.get("NetworkSettings", {})
    published = {int(b["HostPort"]) for bindings in (net.get("Ports") or {}).values() if bindings
                 for b in bindings if str(b.get("HostPort", "")).isdigit()}
    host_ports = set(published)
    if attrs.get("HostConfig", {}).get("NetworkMode") == "host" and port:
        host_ports.add(port)
    addresses = {f"{n['IPAddress']}:{port}" for n in (net.get("Networks") or {}).values()
                 if n.get("IPAddress") and port}
    return Served(container.name, frozenset(host_ports), frozenset(addresses))


def redis_port(args: list[str], read_file) -> int | None:
    """The port a redis-server command line listens on; None when the container does not run redis-server."""
    if not any(a.rsplit("/", 1)[-1] in ("redis-server", "valkey-server") or a.startswith("--port") for a in args):
        return None
    for i, arg in enumerate(args):
        if arg == "--port" and i + 1 < len(args) and args[i + 1].isdigit():
            return int(args[i + 1])
        if arg.startswith("--port=") and arg[7:].isdigit():
            return int(arg[7:])
    conf = next((a for a in args if a.endswith(".conf")), None)
    if conf:
        try:
            text = read_file(conf)
        except TransportError:
            text = ""
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0].lower() == "port" and parts[1].isdigit():
                return int(parts[1])
    return REDIS_DEFAULT_PORT


def match(addresses: Iterable[str], served: list[Served]) -> dict[str, str]:
    """address -> container name; raises naming every address that no container, or several, serve."""
    out, problems = {}, []
    for address in addresses:
        port = Address.of(address).port
        exact = [s.container for s in served if address in s.addresses]
        by_port = [s.container for s in served if port in s.host_ports]
        found = exact or by_port
        if len(found) == 1:
            out[address] = found[0]
        elif not found:
            problems.append(f"{address}: no running container publishes or listens on port {port}")
        else:
            problems.append(f"{address}: served by several containers ({', '.join(sorted(found))})")
    if problems:
        raise InventoryError("docker discovery: " + "; ".join(problems)
                             + "; name the containers in an inventory instead (container = \"...\")")
    return out


def discover_containers(addresses: Iterable[str], client: docker.DockerClient | None = None) -> dict[str, str]:
    own = client is None
    client = client or engine_client(label="docker discovery")
    try:
        served = [served_by(c, client) for c in client.containers.list()]
    except (docker.errors.DockerException, *ENGINE_LOST) as e:
        raise TransportError(f"docker discovery: the Docker Engine failed to list containers: {e}") from None
    finally:
        if own:
            client.close()
    return match(addresses, served)


def docker_inventory(
    addresses: Iterable[str], data_dir: str | None = None, source: str = "docker discovery"
) -> Inventory:
    mapping = discover_containers(list(addresses))
    nodes = tuple(NodeAccess(address=a, transport="docker", container=c, data_dir=data_dir)
                  for a, c in sorted(mapping.items()))
    return Inventory(source=source, username=None, password_env="REDISCLI_AUTH", nodes=nodes)


def render_toml(inventory: Inventory) -> str:
    nodes: dict[str, dict[str, str | int]] = {}
    for node in inventory.nodes:
        nodes[node.address] = {"container": node.container or ""}
        if node.data_dir:
            nodes[node.address]["data_dir"] = node.data_dir
    return inventory_toml(
        ["Written by `clusterbak inventory --docker`: each node's container, found by its port.",
         "No restart/stop/start commands: clusterbak restarts, stops and starts the containers themselves."],
        {"transport": "docker"}, nodes)
