"""Reshape 3 -> 5 shards with `clusterbak restore-keys` vs the floor of `redis-cli --pipe`-ing pre-made RESTOREs.

Run:  .venv/bin/python benchmarks/restore_keys_reshape.py [--keys 1000000] [--value 500]

1. a 3x1 lab on free loopback ports, filled with --keys strings of --value random (incompressible) bytes, every
   tenth key with a TTL; one `clusterbak backup` (zstd);
2. a fresh 5-master lab (no replicas) as the target;
3. floor: every key's DUMP payload read from the source beforehand (not timed) and written as RESTORE ... ABSTTL
   commands into one file per target master (by slot); timed: one `redis-cli --pipe` per master, all at once;
4. FLUSHALL the target, then timed: `clusterbak restore-keys ID --seed TARGET --yes --json` as a subprocess
   (verify the shards, load each into a scratch server, copy every key), its peak RSS from wait4();
5. prints a markdown table: wall seconds, keys/s, and clusterbak's throughput as a fraction of the floor's
   (goal >= 0.7x), its peak RSS (goal < 200 MB). Everything it starts is stopped and removed on the way out.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402

from clusterbak.lab import cluster  # noqa: E402
from clusterbak.lab.inventory import write_inventory  # noqa: E402
from clusterbak.lab.procs import free_base_port  # noqa: E402
from clusterbak.model.topology import parse_cluster_nodes  # noqa: E402
from clusterbak.plan.restore_keys import key_slot, slot_owner_table  # noqa: E402
from clusterbak.redisops.dumprestore import pack  # noqa: E402

CLI = [sys.executable, "-m", "clusterbak"]
BATCH = 2000


def masters_of(seed_port: int) -> list:
    c = redis.Redis(port=seed_port)
    try:
        return [n for n in parse_cluster_nodes(c.execute_command("CLUSTER", "NODES").decode()).nodes if n.is_master]
    finally:
        c.close()


def pipe_into(port: int, data_path: Path) -> subprocess.Popen:
    return subprocess.Popen(["redis-cli", "-p", str(port), "--pipe"], stdin=open(data_path, "rb"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def fill(seed_port: int, keys: int, value: int, work: Path) -> None:
    """SET (and PEXPIRE on every tenth key) written per master by redis-cli --pipe; random values."""
    masters = masters_of(seed_port)
    table = slot_owner_table([(m.address, m.slots) for m in masters])
    pool = os.urandom(64 << 20)
    rng = random.Random(5)
    files = [open(work / f"fill-{i}.resp", "wb") for i in range(len(masters))]
    per: list[list] = [[] for _ in masters]
    for i in range(keys):
        name = b"k:%d" % i
        off = rng.randrange(0, len(pool) - value)
        m = table[key_slot(name)]
        per[m].append((b"SET", name, pool[off:off + value]))
        if i % 10 == 0:
            per[m].append((b"PEXPIRE", name, 3_600_000 + i % 600_000))
        if i % BATCH == BATCH - 1 or i == keys - 1:
            for f, cmds in zip(files, per, strict=True):
                f.write(pack(cmds))
                cmds.clear()
    for f in files:
        f.close()
    procs = [pipe_into(m.port, work / f"fill-{i}.resp") for i, m in enumerate(masters)]
    for p in procs:
        out = p.communicate()[0].decode()
        assert p.returncode == 0 and "errors: 0" in out, out
    for i in range(len(masters)):
        (work / f"fill-{i}.resp").unlink()


def restore_files(source_port: int, target_masters: list, work: Path) -> list[Path]:
    """RESTORE name abs-ttl payload ABSTTL for every key of the source, one file per target master (untimed)."""
    table = slot_owner_table([(m.address, m.slots) for m in target_masters])
    paths = [work / f"restore-{i}.resp" for i in range(len(target_masters))]
    files = [open(p, "wb") for p in paths]
    for node in masters_of(source_port):
        c = redis.Redis(port=node.port, socket_timeout=120)
        cursor = 0
        while True:
            cursor, names = c.scan(cursor, count=BATCH)
            pipe = c.pipeline(transaction=False)
            for n in names:
                pipe.dump(n)
                pipe.execute_command("PEXPIRETIME", n)
            replies = pipe.execute()
            per: list[list] = [[] for _ in target_masters]
            for j, n in enumerate(names):
                payload, expire = replies[2 * j], replies[2 * j + 1]
                per[table[key_slot(n)]].append(
                    (b"RESTORE", n, max(expire, 0), payload) + ((b"ABSTTL",) if expire > 0 else ())
                )
            for f, cmds in zip(files, per, strict=True):
                f.write(pack(cmds))
            if cursor == 0:
                break
        c.close()
    for f in files:
        f.close()
    return paths


def dbsize(masters: list) -> int:
    return sum(redis.Redis(port=m.port).dbsize() for m in masters)


def flush(masters: list) -> None:
    for m in masters:
        redis.Redis(port=m.port).flushall()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--value", type=int, default=500)
    ap.add_argument("--parallel", type=int, default=3, help="clusterbak's --parallel (shards at once)")
    ap.add_argument("--profile", help="write a cProfile of the clusterbak run here")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="clusterbak-bench-rk-"))
    labs: list[Path] = []
    try:
        t = time.perf_counter()
        src = cluster.up(work / "src", 3, 1, free_base_port(6))
        labs.append(Path(src.dir))
        write_inventory(src)
        fill(src.nodes[0].port, args.keys, args.value, work)
        print(f"filled {args.keys} keys of {args.value} B in {time.perf_counter() - t:.1f}s", file=sys.stderr)
        out = subprocess.run(CLI + ["backup", "--seed", src.seed, "--inventory", src.inventory, "--dest",
                                    str(work / "sets"), "--compress", "zstd", "--json"], capture_output=True, text=True)
        doc = json.loads(out.stdout)
        assert doc["exit_code"] == 0, doc["errors"]
        backup_id, keys = doc["data"]["backup_id"], doc["data"]["manifest"]["totals"]["keys"]
        dst = cluster.up(work / "dst", 5, 0, free_base_port(5))
        labs.append(Path(dst.dir))
        targets = masters_of(dst.nodes[0].port)
        paths = restore_files(src.nodes[0].port, targets, work)
        payload_bytes = sum(p.stat().st_size for p in paths)

        t = time.perf_counter()
        procs = [pipe_into(m.port, p) for m, p in zip(targets, paths, strict=True)]
        for p in procs:
            text = p.communicate()[0].decode()
            assert p.returncode == 0 and "errors: 0" in text, text
        floor_s = time.perf_counter() - t
        assert dbsize(targets) == keys, (dbsize(targets), keys)
        for p in paths:
            p.unlink()
        flush(targets)

        t = time.perf_counter()
        cli = CLI if not args.profile else [sys.executable, "-m", "cProfile", "-o", args.profile, "-m", "clusterbak"]
        proc = subprocess.Popen(cli + ["restore-keys", backup_id, "--dest", str(work / "sets"), "--seed", dst.seed,
                                       "--yes", "--json", "--scratch-dir", str(work), "--parallel", str(args.parallel)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        stdout = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        ours_s = time.perf_counter() - t
        doc = json.loads(stdout)
        assert doc["exit_code"] == 0, doc["errors"]
        rep = doc["data"]["report"]
        assert dbsize(targets) == keys and rep["totals"]["restored"] == keys, (dbsize(targets), rep["totals"])
        rss_mb = usage.ru_maxrss / 1024
        engine_s = rep["seconds"]
        print(f"\nreshape 3 -> 5 masters, {keys} keys, {args.value} B random values, "
              f"{payload_bytes / 1e6:.0f} MB of RESTORE commands\n")
        print("| run | wall s | keys/s | vs floor |")
        print("|---|---|---|---|")
        print(
            f"| floor: redis-cli --pipe of pre-made RESTOREs, 5 at once | {floor_s:.2f} "
            f"| {keys / floor_s:,.0f} | 1.00x |"
        )
        print(f"| clusterbak restore-keys (all of it: verify, 3 scratch loads, copy) | {ours_s:.2f} | "
              f"{keys / ours_s:,.0f} | {floor_s / ours_s:.2f}x |")
        print(f"| clusterbak engine only (its report: scratch loads + copy, no verify/startup) | {engine_s:.2f} | "
              f"{keys / engine_s:,.0f} | {floor_s / engine_s:.2f}x |")
        print(f"\nscratch loads: {', '.join(str(s['load_seconds']) + 's' for s in rep['shards'])}; copies: "
              f"{', '.join(str(s['copy_seconds']) + 's' for s in rep['shards'])}; --parallel {args.parallel}")
        print(f"copy: {rep['copy']}; batches MIGRATE/DUMP/fallback: {rep['totals']['batches_migrate']}/"
              f"{rep['totals']['batches_dump']}/{rep['totals']['batches_fallback']}")
        print(f"clusterbak CPU: {usage.ru_utime + usage.ru_stime:.1f}s (user {usage.ru_utime:.1f}s) "
              f"in {ours_s:.1f}s wall")
        print(f"clusterbak peak RSS: {rss_mb:.0f} MB (goal < 200 MB); throughput goal >= 0.7x the floor")
    finally:
        for lab in reversed(labs):
            cluster.down(lab)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
