"""Issue 14: planning at scale. A 1,000-node synthetic topology (500 masters, 500 replicas, each on its own host)
goes through parse -> check -> backup plan -> rolling plan; goal: < 1 s in total. Pure CPU: no cluster needed.

Run:  python benchmarks/row_planning_scale.py [--masters 500] [--runs 3]

The input is what a real run reads: CLUSTER NODES text as the seed answers it (one line per node, slot ranges on
masters), and per node an INFO reply (~150 lines of `key:value` text, parsed by redis-py's own parser), a CLUSTER
INFO reply and its CONFIG values; an inventory with an SSH host per node. Prints seconds per stage (median of
--runs) and the total against the goal.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from redis._parsers.helpers import parse_info  # noqa: E402

from clusterbak.model.checks import cluster_findings, node_findings  # noqa: E402
from clusterbak.model.inventory import parse_inventory  # noqa: E402
from clusterbak.model.state import NodeState  # noqa: E402
from clusterbak.model.topology import parse_cluster_nodes  # noqa: E402
from clusterbak.plan.backup import plan_backup  # noqa: E402
from clusterbak.plan.rolling import plan_rolling  # noqa: E402
from clusterbak.redisops.discover import parse_cluster_info  # noqa: E402

GOAL_S = 1.0


def node_id(rng: random.Random) -> str:
    return "".join(rng.choices("0123456789abcdef", k=40))


def synthetic(masters: int, seed: int = 5) -> tuple[str, dict[str, str], str]:
    """(CLUSTER NODES text, address -> INFO text, CLUSTER INFO text)."""
    rng = random.Random(seed)
    per = 16384 // masters
    lines, infos = [], {}
    for i in range(masters):
        mid, rid = node_id(rng), node_id(rng)
        m_addr, r_addr = f"10.{i // 250}.{i % 250}.1:6379", f"10.{i // 250}.{i % 250}.2:6379"
        start, end = i * per, (16383 if i == masters - 1 else (i + 1) * per - 1)
        flags = "myself,master" if i == 0 else "master"
        lines.append(f"{mid} {m_addr}@16379 {flags} - 0 1700000000{i:03d} {i + 1} connected {start}-{end}")
        lines.append(f"{rid} {r_addr}@16379 slave {mid} 0 1700000000{i:03d} {i + 1} connected")
        infos[m_addr] = info_text("master", 123456789 + i)
        infos[r_addr] = info_text("slave", 123456789 + i, m_addr)
    cluster_info = "\r\n".join(["cluster_state:ok", "cluster_slots_assigned:16384", "cluster_slots_ok:16384",
                                "cluster_slots_pfail:0", "cluster_slots_fail:0", f"cluster_known_nodes:{2 * masters}",
                                f"cluster_size:{masters}", f"cluster_current_epoch:{masters}", "cluster_my_epoch:1"])
    return "\n".join(lines) + "\n", infos, cluster_info


def info_text(role: str, offset: int, master: str | None = None) -> str:
    """An INFO all reply shaped like Redis 7's (sections, ~150 fields)."""
    out = ["# Server", "redis_version:7.2.4", "redis_mode:cluster", "os:Linux 6.1.0 x86_64", "arch_bits:64",
           "process_id:1234", "run_id:" + "f" * 40, "tcp_port:6379", "uptime_in_seconds:864000", "hz:10",
           "executable:/usr/bin/redis-server", "config_file:/etc/redis/redis.conf", "",
           "# Clients", "connected_clients:12", "blocked_clients:0", "",
           "# Memory", "used_memory:1073741824", "used_memory_human:1.00G", "used_memory_rss:1181116006",
           "used_memory_peak:1288490188", "maxmemory:4294967296", "maxmemory_policy:noeviction",
           "mem_fragmentation_ratio:1.10", "",
           "# Persistence", "loading:0", "async_loading:0", "rdb_changes_since_last_save:1200",
           "rdb_bgsave_in_progress:0", "rdb_last_save_time:1700000000", "rdb_last_bgsave_status:ok",
           "rdb_last_bgsave_time_sec:4", "rdb_current_bgsave_time_sec:-1", "rdb_saves:42",
           "rdb_last_cow_size:10485760", "aof_enabled:0", "aof_rewrite_in_progress:0",
           "aof_rewrite_scheduled:0", "aof_last_bgrewrite_status:ok", "",
           "# Stats", *(f"stat_{k}:{k * 1000}" for k in range(40)), "",
           "# Replication", f"role:{role}"]
    if role == "slave":
        host, port = master.rsplit(":", 1)
        out += [f"master_host:{host}", f"master_port:{port}", "master_link_status:up", "master_last_io_seconds_ago:0",
                "master_sync_in_progress:0", f"slave_read_repl_offset:{offset}", f"slave_repl_offset:{offset}",
                "slave_priority:100", "slave_read_only:1", "connected_slaves:0"]
    else:
        out += ["connected_slaves:1", f"slave0:ip=10.0.0.2,port=6379,state=online,offset={offset},lag=0"]
    out += ["master_failover_state:no-failover", "master_replid:" + "a" * 40, "master_replid2:" + "0" * 40,
            f"master_repl_offset:{offset}", "repl_backlog_active:1", "repl_backlog_size:1048576", "",
            "# CPU", *(f"used_cpu_{k}:{k}.5" for k in ("sys", "user", "sys_children", "user_children")), "",
            "# Commandstats",
            *(f"cmdstat_c{k}:calls={k},usec={k * 3},usec_per_call=3.00,rejected_calls=0,failed_calls=0"
              for k in range(40)), "",
            "# Cluster", "cluster_enabled:1", "", "# Keyspace", "db0:keys=1000000,expires=1000,avg_ttl=0"]
    return "\r\n".join(out)


def once(masters: int, text: str, infos: dict[str, str], cluster_info: str) -> dict[str, float]:
    times: dict[str, float] = {}
    t = time.perf_counter()
    topology = parse_cluster_nodes(text)
    # the views: the seed's parse stands for every node's (see probe_views for parsing each node's own reply)
    states = tuple(NodeState(node=n, info=parse_info(infos[n.address]), cluster_info=parse_cluster_info(cluster_info),
                             view=topology, dbsize=1000000, config={"dir": "/var/lib/redis", "dbfilename": "dump.rdb",
                                                     "cluster-config-file": "nodes.conf", "appendonly": "no",
                                                     "save": "3600 1"})
                   for n in topology.nodes)
    times["parse (CLUSTER NODES + 1,000 INFO replies)"] = time.perf_counter() - t
    t = time.perf_counter()
    findings = cluster_findings(topology, states)
    for s in states:
        findings.extend(node_findings(s))
    times["check"] = time.perf_counter() - t
    t = time.perf_counter()
    inventory = parse_inventory({"defaults": {"transport": "ssh", "ssh_user": "redis",
                                              "restart_command": "sudo systemctl restart redis-server"},
                                 "nodes": {n.address: {"data_dir": "/var/lib/redis"} for n in topology.nodes}},
                                "inventory.toml")
    times["inventory"] = time.perf_counter() - t
    t = time.perf_counter()
    backup = plan_backup("20260101T000000Z-0000", topology, states, inventory)
    times["backup plan"] = time.perf_counter() - t
    t = time.perf_counter()
    rolling = plan_rolling(topology, states, inventory)
    times["rolling plan"] = time.perf_counter() - t
    assert len(topology.nodes) == 2 * masters and len(topology.shards) == masters
    assert backup.ok, backup.refusals[:3]
    assert len({s.host for s in backup.shards}) == masters  # the per-host scheduler sees 500 hosts
    assert rolling.ok, rolling.refusals[:3]
    assert not [f for f in findings if f.severity == "critical"], findings[:3]
    return times


def probe_views(text: str, nodes: int) -> float:
    """Seconds to parse every node's own CLUSTER NODES reply into its view, as probing does (reported apart: it is
    quadratic in the cluster's size, nodes x lines, and happens while probing, not planning)."""
    t = time.perf_counter()
    for _ in range(nodes):
        parse_cluster_nodes(text)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--masters", type=int, default=500)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--skip-views", action="store_true", help="do not time parsing every node's own view")
    args = ap.parse_args()
    text, infos, cluster_info = synthetic(args.masters)
    runs = [once(args.masters, text, infos, cluster_info) for _ in range(args.runs)]
    print(f"planning at scale: {2 * args.masters:,} nodes ({args.masters} masters x 1 replica, one host each), "
          f"median of {args.runs} runs")
    print()
    print("| stage | median s |")
    print("|---|---|")
    for stage in runs[0]:
        print(f"| {stage} | {statistics.median(r[stage] for r in runs):.3f} |")
    total = statistics.median(sum(r.values()) for r in runs)
    print(f"| **total** | **{total:.3f}** |")
    print()
    print(f"goal < {GOAL_S:.1f} s: {'met' if total < GOAL_S else 'NOT met'} ({total / GOAL_S:.2f}x of the budget)")
    if not args.skip_views:
        print(f"apart, probe side: parsing all {2 * args.masters:,} nodes' own CLUSTER NODES replies into views "
              f"takes {probe_views(text, 2 * args.masters):.2f} s ({2 * args.masters:,} x {2 * args.masters:,} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
