"""RTO of `clusterbak drill` vs the physical floor, in one run, on the same ~1 GB backup set.

Run standalone:  /tmp/v/bin/python benchmarks/drill_rto.py [--gb 1.0] [--runs 2]

1. a 3x1 lab on free loopback ports filled fast (the fill of benchmarks/backup_vs_anchor.py), one backup (zstd);
2. --runs rounds, alternated, of
     drill  `clusterbak drill ID --dest D --json` (a lab of the backup's shape, restore with --map, verify as it places,
            wait for cluster_state ok + replicas synced, prove slots/roles/key counts, read keys of every type):
            its reported RTO (and its parts: rto_phases) and its wall time;
     floor  by hand, the least an operator must do for the same end state (every node holding its shard's data):
            decompress each shard's dump once into a fresh dir (hard links for its other nodes) and start a
            standalone redis-server on each node's, all nodes at once, until loading:0 - no verification, no
            nodes.conf, no cluster forming;
3. prints a markdown table: median seconds and the ratio drill/floor (goal <= 1.3x).
Everything it starts is stopped and removed on the way out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis  # noqa: E402
from backup_vs_anchor import Filled, fill, text_pool  # noqa: E402

from clusterbak.lab import cluster  # noqa: E402
from clusterbak.lab.inventory import write_inventory  # noqa: E402
from clusterbak.lab.procs import free_base_port, start_standalone, stop_pid  # noqa: E402
from clusterbak.storage.sink import iter_stored_file  # noqa: E402

CLI = [sys.executable, "-m", "clusterbak"]
CLUSTER_MODE = True


def floor_once(set_dir: Path, manifest: dict, work: Path) -> float:
    """Decompress each shard's dump once, hard-link it for the shard's other nodes (what the drill does too, since
    engine/placed_once.py), and load every node's copy into a standalone redis-server, all at once."""
    t0 = time.perf_counter()
    pids = []
    by_index = {s["index"]: s for s in manifest["shards"]}
    shard_of_node = {
        n["id"]: (n["id"] if n["role"] == "master" else n["master_id"]) for n in manifest["topology"]["nodes"]
    }
    master_shard = {s["master"]["id"]: s["index"] for s in manifest["shards"]}
    copies = [(i, by_index[master_shard[shard_of_node[n["id"]]]]) for i, n in enumerate(manifest["topology"]["nodes"])
              if shard_of_node[n["id"]] in master_shard]
    base = free_base_port(len(copies))  # one block, so parallel starts cannot pick the same port
    first: dict[int, tuple[threading.Event, Path]] = {}
    claim = threading.Lock()

    def one(copy: tuple[int, dict]) -> int:
        n, shard = copy
        d = work / f"floor-{n}"
        d.mkdir(parents=True)
        with claim:
            mine = shard["index"] not in first
            if mine:
                first[shard["index"]] = (threading.Event(), d / "dump.rdb")
        done, written = first[shard["index"]]
        if mine:
            try:
                with open(d / "dump.rdb", "wb") as out:
                    for chunk in iter_stored_file(set_dir / shard["file"]["path"], shard["file"]["compression"]):
                        out.write(chunk)
            finally:
                done.set()
        else:
            done.wait()
            os.link(written, d / "dump.rdb")
        port = base + n
        # cluster-enabled like every node of a restored cluster (Redis keeps per-slot indexes while loading);
        # a fresh nodes.conf, no peers: no cluster is formed
        pid = start_standalone(
            d,
            port,
            f"cluster-enabled yes\ncluster-config-file nodes-{port}.conf\n" if CLUSTER_MODE else "",
            timeout=600,
        )
        pids.append(pid)
        c = redis.Redis(port=port)
        while int(c.info("persistence")["loading"]):
            time.sleep(0.02)
        assert c.dbsize() == shard["rdb"]["keys"], "floor loaded a different key count"
        return pid

    try:
        with ThreadPoolExecutor(len(copies)) as pool:
            list(pool.map(one, copies))
        return time.perf_counter() - t0
    finally:
        for pid in pids:
            stop_pid(pid)
        shutil.rmtree(work, ignore_errors=True)


def drill_once(backup_id: str, dest: Path, lab_dir: Path, parts: list[dict]) -> tuple[float, float]:
    t0 = time.perf_counter()
    out = subprocess.run([*CLI, "drill", backup_id, "--dest", str(dest), "--lab-dir", str(lab_dir), "--json"],
                         capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    doc = json.loads(out.stdout)
    if doc["exit_code"] != 0:
        raise SystemExit(f"drill failed: {doc['errors']}")
    parts.append(doc["data"].get("rto_phases", {}))  # the drill's own RTO breakdown (absent before it had one)
    return doc["data"]["rto_seconds"], wall


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--standalone-floor", action="store_true", help="floor servers without cluster-enabled")
    args = ap.parse_args()
    global CLUSTER_MODE
    CLUSTER_MODE = not args.standalone_floor
    root = Path(tempfile.mkdtemp(prefix="clusterbak-bench-rto-"))
    lab_dir = root / "lab"
    try:
        lab = cluster.up(lab_dir, 3, 1, free_base_port(6))
        write_inventory(lab)
        filled = Filled()
        fill(lab.nodes[0].port, int(args.gb * 1e9), 0, text_pool(4_000_000), filled)
        dest = root / "sets"
        out = subprocess.run([*CLI, "backup", "--seed", lab.seed, "--inventory", lab.inventory, "--dest", str(dest),
                              "--json"], capture_output=True, text=True, timeout=1800)
        doc = json.loads(out.stdout)
        if doc["exit_code"] != 0:
            raise SystemExit(f"backup failed: {doc['errors']}")
        manifest = doc["data"]["manifest"]
        cluster.down(lab_dir)  # the drill's and the floor's servers get the machine to themselves
        set_dir = dest / manifest["backup_id"]
        rto, wall, floors = [], [], []
        parts: list[dict] = []
        for i in range(args.runs):
            steps = [
                lambda i=i: floors.append(floor_once(set_dir, manifest, root / f"floor{i}")),
                lambda i=i: [
                    (rto.append(r), wall.append(w))
                    for r, w in [drill_once(manifest["backup_id"], dest, root / f"drill{i}", parts)]
                ],
            ]
            for step in (steps if i % 2 == 0 else steps[::-1]):
                step()
        f, r, w = statistics.median(floors), statistics.median(rto), statistics.median(wall)
        raw = manifest["totals"]["raw_bytes"]
        print(
            f"\nbackup set: {manifest['totals']['keys']} keys, {raw / 1e6:.0f} MB of RDB, "
            f"{manifest['totals']['stored_bytes'] / 1e6:.0f} MB stored (zstd), 3 shards x 1 replica; "
            f"{args.runs} runs each\n"
        )
        print("| what | median s | ratio to floor | goal |")
        print("|---|---|---|---|")
        mode = "cluster-enabled" if CLUSTER_MODE else "standalone"
        print(
            f"| floor: decompress each shard once (hard links for its replica), load all 6 ({mode} redis-server) "
            f"| {f:.2f} | 1.00x | |"
        )
        print(
            f"| clusterbak drill RTO (lab, restore+verify 6 nodes, prove, sample) | {r:.2f} | {r / f:.2f}x | <= 1.3x |"
        )
        print(f"| clusterbak drill wall time (plus process start and lab teardown) | {w:.2f} | {w / f:.2f}x | |")
        wait = [p["redis_master_ready_wait"] for p in parts if "redis_master_ready_wait" in p]
        if wait:
            m = statistics.median(r - x for r, x in zip(rto, wait, strict=True))
            print(f"| drill RTO less Redis's master-ready wait (what clusterbak costs) | {m:.2f} | {m / f:.2f}x | |")
            print("\nthe drill's RTO in parts (median s): " + ", ".join(
                f"{k} {statistics.median(p[k] for p in parts if k in p):.2f}" for k in parts[0]))
        print(
            f"\nall runs: floor {[round(x, 2) for x in floors]}, RTO {[round(x, 2) for x in rto]}, "
            f"wall {[round(x, 2) for x in wall]}"
        )
        return 0
    finally:
        if cluster.load(lab_dir):
            cluster.down(lab_dir)
        for d in root.glob("drill*"):
            if cluster.load(d):
                cluster.down(d)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
