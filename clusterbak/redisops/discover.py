"""Discover a cluster from one seed, and probe every node into a NodeState snapshot."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import redis

from clusterbak.errors import ConnectError
from clusterbak.model.state import CONFIG_KEYS, NodeState
from clusterbak.model.topology import Node, Topology, TopologyParseError, parse_cluster_nodes
from clusterbak.redisops.connect import ConnectionOptions, describe_redis_error, make_client, redis_errors

PROBE_WORKERS = 16  # nodes probed at once


def discover(opts: ConnectionOptions) -> Topology:
    """The topology as the seed sees it. Unreachable seed, bad auth or non-cluster node -> ConnectError."""
    client = make_client(opts, opts.seed_host, opts.seed_port)
    try:
        with redis_errors(opts.seed, opts):
            text = client.execute_command("CLUSTER", "NODES")
    finally:
        client.close()
    try:
        return parse_cluster_nodes(text)
    except TopologyParseError as exc:
        raise ConnectError(f"{opts.seed}: could not parse CLUSTER NODES: {exc}") from exc


def probe_node(opts: ConnectionOptions, node: Node) -> NodeState:
    """INFO, CLUSTER INFO/NODES, CONFIG and DBSIZE of one node; failures are recorded, not raised."""
    client = make_client(opts, node.host, node.port)
    try:
        info = client.info("all")
        cluster_info = client.execute_command("CLUSTER", "INFO")
        nodes_text = client.execute_command("CLUSTER", "NODES")
        dbsize = int(client.dbsize())
    except (redis.RedisError, OSError) as exc:
        client.close()
        return NodeState(node=node, error=describe_redis_error(node.address, exc, opts))
    config, config_error = read_config(client, CONFIG_KEYS)
    client.close()
    try:
        view = parse_cluster_nodes(nodes_text)
    except TopologyParseError as exc:
        return NodeState(node=node, error=f"{node.address}: unparseable CLUSTER NODES: {exc}")
    return NodeState(
        node=node, info=info, cluster_info=parse_cluster_info(cluster_info), view=view,
        dbsize=dbsize, config=config, config_error=config_error,
    )


def probe_all(opts: ConnectionOptions, topology: Topology) -> tuple[NodeState, ...]:
    """Every node probed at once (PROBE_WORKERS at a time): a cluster costs about one node's round trips, not one
    per node in a row; a slow or dead node does not hold up the others' answers. In the topology's order."""

    def one(n: Node) -> NodeState:
        return probe_node(opts, n) if "noaddr" not in n.flags else NodeState(node=n, error=f"{n.node_id}: noaddr")

    if len(topology.nodes) <= 1:
        return tuple(one(n) for n in topology.nodes)
    with ThreadPoolExecutor(max_workers=min(PROBE_WORKERS, len(topology.nodes))) as pool:
        return tuple(pool.map(one, topology.nodes))


def read_config(client: redis.Redis, keys: tuple[str, ...]) -> tuple[dict[str, str], str | None]:
    """CONFIG GET of the keys we care about. A renamed/disabled CONFIG is reported, not raised."""
    out: dict[str, str] = {}
    for key in keys:
        try:
            reply = client.execute_command("CONFIG", "GET", key)
        except redis.ResponseError as exc:
            if "unknown command" in str(exc).lower() or "noperm" in str(exc).lower():
                return {}, f"CONFIG GET refused ({exc}); it is renamed or disabled"
            continue
        if isinstance(reply, dict):
            out.update({str(k): str(v) for k, v in reply.items()})
        else:
            out.update({str(reply[i]): str(reply[i + 1]) for i in range(0, len(reply) - 1, 2)})
    return out, None


def parse_cluster_info(text: str) -> dict[str, str]:
    if isinstance(text, dict):
        return {str(k): str(v) for k, v in text.items()}
    out = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition(":")
        if sep:
            out[key] = value
    return out
