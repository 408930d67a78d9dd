"""On a fleet (one host per node, SSH): `clusterbak backup` vs `redis-cli --cluster backup`, and a rolling upgrade's
worst write gap vs a naive stop/replace/start of each node.

Run standalone:  .venv/bin/python benchmarks/fleet_backup_vs_anchor.py [--mb 1000] [--runs 3] [--rolling-keys 3000]

1. A 3x1 fleet (Redis 7.0, images from scripts/build-images.sh) filled with --mb MB of random (incompressible)
   100 KB values, pipelined straight to each master under hashtags it owns; waits until the replicas have it.
2. --runs rounds, alternating which goes first: the anchor `redis-cli --cluster backup SEED DIR` (walks the masters
   one by one; each answers with a disk BGSAVE and streams it) and `clusterbak backup` (one BGSAVE per host on the
   replicas, in parallel, files over SSH, verified while streaming, --compress auto (the default: random data is
   stored raw); default --parallel 2 and --parallel 3; and --via sync: each replica streams its snapshot over
   PSYNC, no SSH for the data).
   Prints median wall seconds and the ratio
   (goal <= 0.7x).
3. Two small fleets (--rolling-keys keys): Redis 7.0 -> 8.0 by `rolling-restart --upgrade-command` under a retrying
   writer, and by a naive loop that replaces every node's container (replicas first, then masters) with no failover.
   Prints each one's worst gap between two acknowledged writes, failed and lost writes.

Everything made is removed on the way out (the fleets' labels), also on failure. MB = 10^6 bytes.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis  # noqa: E402
from backup_vs_anchor import Series, hashtags, run_anchor, run_clusterbak  # noqa: E402

from clusterbak.lab import fleet as fl  # noqa: E402
from clusterbak.lab.load import load as load_keys  # noqa: E402
from clusterbak.lab.writer import Writer, missing  # noqa: E402
from clusterbak.model.topology import parse_cluster_nodes  # noqa: E402

VALUE = 100_000
BATCH = 40


def fill_random(fleet: fl.Fleet, total_bytes: int) -> None:
    c = redis.Redis(host=fleet.nodes[0].ip, port=fl.PORT, decode_responses=True)
    topo = parse_cluster_nodes(c.execute_command("CLUSTER", "NODES"))
    c.close()
    masters = [n for n in topo.nodes if n.is_master]
    per_master = total_bytes // len(masters)
    for m in masters:
        ranges = [(r.start, r.end) for r in m.slots]
        tags = hashtags(ranges, 16, f"m{m.port}{m.host}")
        client = redis.Redis(host=m.host, port=m.port, socket_timeout=60)
        written, n = 0, 0
        while written < per_master:
            pipe = client.pipeline(transaction=False)
            for _ in range(BATCH):
                pipe.set(f"{{{tags[n % len(tags)]}}}:{n}", os.urandom(VALUE))
                n += 1
                written += VALUE
            pipe.execute()
        client.close()
    deadline = time.monotonic() + 600
    host_of = {m.node_id: m.host for m in masters}
    for r in (n for n in topo.nodes if not n.is_master):
        rc = redis.Redis(host=r.host, port=r.port, decode_responses=True)
        mc = redis.Redis(host=host_of[r.master_id], port=fl.PORT, decode_responses=True)
        while int(rc.info("replication").get("slave_repl_offset", -1)) < int(
            mc.info("replication")["master_repl_offset"]
        ):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{r.address} did not catch up with its master")
            time.sleep(0.2)
        rc.close()
        mc.close()


WAYS = {  # name -> clusterbak flags (None: the anchor)
    "anchor redis-cli --cluster backup": None,
    "clusterbak backup (SSH, compress auto, verified)": (),
    "clusterbak backup --parallel 3": ("--parallel", "3"),
    "clusterbak backup --via sync": ("--via", "sync"),
    "clusterbak backup --via sync --parallel 3": ("--via", "sync", "--parallel", "3"),
}


def backups(root: Path, mb: int, runs: int) -> list[Series]:
    series = [Series(name) for name in WAYS]
    fleet = fl.up(root / "big", "redis-7.0", 3, 1, name_prefix="clusterbak-bench")
    try:
        t0 = time.monotonic()
        fill_random(fleet, mb * 1_000_000)
        print(f"filled {mb} MB of random values in {time.monotonic() - t0:.0f}s", file=sys.stderr)
        for i in range(runs):
            k = i % len(series)
            for one in series[k:] + series[:k]:  # the order rotates each round
                flags = WAYS[one.name]
                if flags is None:
                    run_anchor(fleet.seed, root, one, 3)
                else:
                    run_clusterbak(fleet.seed, fleet.inventory, root, one, "auto", flags)
                print(f"round {i + 1}: {one.name} {one.runs[-1].wall:.2f}s", file=sys.stderr)
    finally:
        fl.down(root / "big")
    return series


def upgrade_gap(root: Path, keys: int, naive: bool) -> dict:
    name = "naive" if naive else "rolling"
    fleet = fl.up(root / name, "redis-7.0", 3, 1, name_prefix="clusterbak-bench")
    try:
        load_keys(fleet.nodes[0].ip, fl.PORT, keys)
        writer = Writer(fleet.nodes[0].ip, fl.PORT, name=name, budget_s=30)
        writer.start()
        time.sleep(1.0)
        t0 = time.monotonic()
        if naive:
            for node in sorted(fleet.nodes, key=lambda n: n.role != "replica"):
                fl.upgrade_node(root / name, node.address, "redis-8.0")
        else:
            from typer.testing import CliRunner

            from clusterbak.cli.app import app

            result = CliRunner().invoke(app, ["rolling-restart", "--seed", fleet.seed, "--inventory", fleet.inventory,
                                              "--upgrade-command", fl.upgrade_command(fleet, "redis-8.0"), "--yes",
                                              "--json"])
            if result.exit_code != 0:
                raise RuntimeError(f"rolling upgrade failed: {result.stdout[-2000:]}")
        took = time.monotonic() - t0
        time.sleep(5.0)  # the naive way: let the cluster settle before counting
        stats = writer.finish()
        lost = len(missing(fleet.nodes[0].ip, fl.PORT, writer.acked))
        return {"way": name, "seconds": took, "max_gap_s": stats.max_gap_s, "failed": len(stats.failed),
                "lost": lost, "acked": stats.acked}
    finally:
        fl.down(root / name)


def main() -> int:
    # a SIGTERM (timeout, kill) unwinds like Ctrl-C, so the fleets' finally blocks remove their containers
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    p = argparse.ArgumentParser()
    p.add_argument("--mb", type=int, default=1000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--rolling-keys", type=int, default=3000)
    p.add_argument("--skip-backup", action="store_true")
    p.add_argument("--skip-rolling", action="store_true", help="only the backup rows")
    args = p.parse_args()
    fl.build_images(("redis-7.0", "redis-8.0"))
    with tempfile.TemporaryDirectory(prefix="clusterbak-fleet-bench-") as tmp:
        root = Path(tmp)
        if not args.skip_backup:
            series = backups(root, args.mb, args.runs)
            anchor, ours = series[0], series[1:]
            print(f"\n## backup of {args.mb} MB random data on a 3x1 fleet (median of {args.runs}, alternating)\n")
            print("| way | median s | runs | ratio to anchor |")
            print("| --- | --- | --- | --- |")
            for s in series:
                print(f"| {s.name} | {s.median:.2f} | {', '.join(f'{r.wall:.2f}' for r in s.runs)} | "
                      f"{s.median / anchor.median:.2f}x |")
            best = min(ours, key=lambda s: s.median)
            print(f"\nbest: {best.name}, {best.median / anchor.median:.2f}x; "
                  f"goal <= 0.7x: {'met' if best.median / anchor.median <= 0.7 else 'NOT met'}")
            for s in ours:
                saves, transfers = (", ".join(f"{x:.2f}" for x in xs) for xs in (s.save_s, s.transfer_s))
                print(f"{s.name}: save seconds per run (sum over shards) {saves}; transfer {transfers}")
        if args.skip_rolling:
            return 0
        rows = [upgrade_gap(root, args.rolling_keys, naive=False), upgrade_gap(root, args.rolling_keys, naive=True)]
        print(f"\n## Redis 7.0 -> 8.0 upgrade of a 3x1 fleet under a writer ({args.rolling_keys} keys)\n")
        print("| way | took s | worst write gap s | failed | lost | acked |")
        print("| --- | --- | --- | --- | --- | --- |")
        for r in rows:
            print(
                f"| {r['way']} | {r['seconds']:.1f} | {r['max_gap_s']:.2f} | {r['failed']} | {r['lost']} "
                f"| {r['acked']} |"
            )
        print(f"\nworst gap ratio rolling/naive: {rows[0]['max_gap_s'] / max(rows[1]['max_gap_s'], 1e-9):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
