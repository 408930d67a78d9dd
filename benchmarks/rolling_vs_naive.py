"""Side by side: `clusterbak rolling-restart` vs restarting the masters the naive ways, under live writes.

Run standalone:  PYTHONPATH=. /tmp/v/bin/python benchmarks/rolling_vs_naive.py [--masters 3] [--keys 2000]

Each way gets a fresh lab cluster (clusterbak.lab: redis-server on 127.0.0.1, cluster-node-timeout 3000 ms, no
persistence) with the same keys, and one writer per shard (redis-py RedisCluster with retries, plus a 2 s retry
budget per write, like an application timeout) that records every acknowledged write:

  rolling      clusterbak rolling-restart --yes: replicas, then CLUSTER FAILOVER -> restart -> failback per master
  naive        per master: stop it, let the cluster fail over on its own, start it again (it rejoins as a replica)
  in place     per master: the inventory's restart_command, nothing else (faster than the node timeout)

Measured per way: writes acknowledged / failed (error outlived the budget) / lost (acknowledged, gone afterwards),
per shard the longest time without an acknowledged write, masters that end in their original role, duration.
Prints one table with the ratios naive / rolling; stops every server it started and removes its directories.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402

from clusterbak.config import load_inventory  # noqa: E402
from clusterbak.lab import cluster  # noqa: E402
from clusterbak.lab.inventory import write_inventory  # noqa: E402
from clusterbak.lab.load import load as load_keys  # noqa: E402
from clusterbak.lab.procs import free_base_port  # noqa: E402
from clusterbak.lab.writer import Writer, missing, shard_slot_filter  # noqa: E402
from clusterbak.model.topology import parse_cluster_nodes  # noqa: E402

BUDGET_S = 2.0


def nodes_view(address: str):
    host, port = address.rsplit(":", 1)
    c = redis.Redis(host=host, port=int(port), decode_responses=True, socket_timeout=2)
    try:
        return parse_cluster_nodes(c.execute_command("CLUSTER", "NODES"))
    finally:
        c.close()


def info(address: str, section: str) -> dict:
    host, port = address.rsplit(":", 1)
    c = redis.Redis(host=host, port=int(port), decode_responses=True, socket_timeout=2)
    try:
        return c.info(section)
    finally:
        c.close()


def wait(predicate, timeout: float, what: str) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if predicate():
                return time.monotonic() - start
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not within {timeout:.0f}s")


def healthy(lab) -> bool:
    """cluster_state:ok and nobody flagged failing, from every node; every replica linked to its master."""
    for n in lab.nodes:
        host, port = n.address.rsplit(":", 1)
        c = redis.Redis(host=host, port=int(port), decode_responses=True, socket_timeout=2)
        try:
            if "cluster_state:ok" not in c.execute_command("CLUSTER", "INFO"):
                return False
            if c.info("replication").get("master_link_status", "up") != "up":
                return False
        finally:
            c.close()
        if any(x.is_failing for x in nodes_view(n.address).nodes):
            return False
    return True


def owner(address: str, slot: int) -> str | None:
    """The node id of the healthy master serving `slot`, as `address` sees it."""
    return next((n.node_id for n in nodes_view(address).nodes if n.is_master and not n.is_failing
                 and any(r.start <= slot <= r.end for r in n.slots)), None)


def run_shell(command: str) -> None:
    subprocess.run(command, shell=True, check=True, capture_output=True, timeout=120)


def naive_failover(lab, inventory, master) -> None:
    """Stop the master, let the cluster promote its replica on its own, start the old master again."""
    access = inventory.access(master.address)
    other = next(n for n in lab.nodes if n.address != master.address)
    run_shell(access.command("stop_command", data_dir=access.data_dir))
    wait(lambda: owner(other.address, master.slots[0].start) not in (None, master.node_id), 60,
         f"a replica takes over {master.address}")
    run_shell(access.command("start_command", data_dir=access.data_dir))
    wait(lambda: info(master.address, "replication").get("master_link_status") == "up" and healthy(lab), 60,
         f"{master.address} back as a synced replica")


def naive_in_place(lab, inventory, master) -> None:
    """The inventory's restart_command on the master, then wait until the cluster looks healthy again."""
    access = inventory.access(master.address)
    run_shell(access.command("restart_command", data_dir=access.data_dir))
    wait(lambda: healthy(lab), 60, f"cluster healthy after restarting {master.address}")


def measure(way: str, root: Path, masters: int, keys: int) -> dict:
    lab_dir = root / way
    lab = cluster.up(lab_dir, masters, 1, free_base_port(masters * 2))
    try:
        write_inventory(lab)
        load_keys("127.0.0.1", lab.nodes[0].port, keys)
        topo = nodes_view(lab.seed)
        before = {i: s.master.node_id for i, s in enumerate(topo.shards)}
        writers = [Writer("127.0.0.1", lab.nodes[0].port, f"{way}{i}",
                          shard_slot_filter([(r.start, r.end) for r in s.slots]), budget_s=BUDGET_S)
                   for i, s in enumerate(topo.shards)]
        for w in writers:
            w.start()
        time.sleep(1.0)
        started = time.monotonic()
        if way == "rolling":
            proc = subprocess.run([sys.executable, "-m", "clusterbak", "rolling-restart", "--seed", lab.seed,
                                   "--inventory", lab.inventory, "--yes", "--json"], capture_output=True, text=True)
            doc = json.loads(proc.stdout)
            if proc.returncode != 0:
                raise RuntimeError(f"rolling-restart exited {proc.returncode}: {doc['errors']}")
        else:
            inventory = load_inventory(lab.inventory)
            for shard in topo.shards:
                (naive_failover if way == "naive" else naive_in_place)(lab, inventory, shard.master)
        duration = time.monotonic() - started
        time.sleep(1.0)
        stats = [w.finish() for w in writers]
        after = {i: owner(lab.nodes[-1].address, s.slots[0].start) for i, s in enumerate(topo.shards)}
        lost = sum(len(missing("127.0.0.1", lab.nodes[0].port, w.acked)) for w in writers)
        return {"way": way, "acked": sum(s.acked for s in stats), "failed": sum(len(s.failed) for s in stats),
                "lost": lost, "gaps": [round(s.max_gap_s, 2) for s in stats],
                "stalled": [round(s.stalled_s, 2) for s in stats],
                "in_role": sum(before[i] == after[i] for i in before), "shards": len(before),
                "duration": round(duration, 1)}
    finally:
        cluster.down(lab_dir)


def ratio(a: float, b: float) -> str:
    if b == 0:
        return "-" if a == 0 else "inf"
    return f"{a / b:.1f}x"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--masters", type=int, default=3)
    parser.add_argument("--keys", type=int, default=2000)
    parser.add_argument("--ways", default="rolling,naive,in-place")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="clusterbak-bench-"))
    try:
        results = {}
        for way in args.ways.split(","):
            print(f"measuring {way} ...", file=sys.stderr, flush=True)
            results[way] = measure(way, root, args.masters, args.keys)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ways = list(results)
    rows = [
        ("writes acknowledged (throughput)", lambda r: r["acked"]),
        ("writes failed (error outlived retries)", lambda r: r["failed"]),
        ("acknowledged writes lost", lambda r: r["lost"]),
        ("worst shard: longest write gap (s)", lambda r: max(r["gaps"])),
        ("per shard: longest write gap (s)", lambda r: " ".join(f"{g:.2f}" for g in r["gaps"])),
        ("per shard: time in gaps > 0.1 s (s)", lambda r: " ".join(f"{g:.2f}" for g in r["stalled"])),
        ("masters back in their original role", lambda r: f"{r['in_role']}/{r['shards']}"),
        ("duration of the restart (s)", lambda r: r["duration"]),
    ]
    print(f"\n{args.masters} masters x 1 replica, {args.keys} keys, cluster-node-timeout {cluster.NODE_TIMEOUT_MS} ms, "
          f"one writer per shard, retry budget {BUDGET_S:.0f} s per write")
    head = f"{'':<40}" + "".join(f"{w:>18}" for w in ways)
    if "rolling" in results and "naive" in results:
        head += f"{'naive / rolling':>18}"
    print(head)
    for label, get in rows:
        line = f"{label:<40}" + "".join(f"{str(get(results[w])):>18}" for w in ways)
        if "rolling" in results and "naive" in results and not label.startswith("writes ack"):
            a, b = get(results["naive"]), get(results["rolling"])
            line += f"{ratio(a, b) if isinstance(a, (int, float)) else '':>18}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
