"""Reshape 3 -> 5 shards with `clusterbak restore-keys` vs the floor of `redis-cli --pipe`-ing pre-made RESTOREs.

Run:  .venv/bin/python benchmarks/restore_keys_reshape.py [--keys 1000000] [--value 500] [--rounds 3]
                                                          [--against OTHER_SOURCE_TREE]...

1. a 3x1 lab on free loopback ports, filled with --keys strings of --value random (incompressible) bytes, every
   tenth key with a TTL; one `clusterbak backup` (zstd);
2. a fresh 5-master lab (no replicas) as the target;
3. floor: every key's DUMP payload read from the source beforehand (not timed) and written as RESTORE ... ABSTTL
   commands into one file per target master (by slot); timed: one `redis-cli --pipe` per master, all at once;
4. FLUSHALL the target, then timed: `clusterbak restore-keys ID --seed TARGET --yes --json` as a subprocess
   (place and check the shards, load each into a scratch server, copy every key), its peak RSS from wait4();
5. prints a markdown table: wall seconds, keys/s, and clusterbak's throughput as a fraction of the floor's
   (goal >= 0.7x), its peak RSS (goal < 200 MB). Everything it starts is stopped and removed on the way out.

--rounds N repeats steps 3-4 N times, alternating (the machine is shared: ratios come from neighbouring runs; the
medians are printed). --against DIR also runs `restore-keys` from another source tree of clusterbak (e.g. a
`git worktree` of an older commit) in each round, on the same backup and target: a before/after in one run.
Where the CPU goes, per run: the target masters (their utime+stime before and after), the scratch servers
(sampled from /proc while they live; their "DB loaded" time from their logs), the redis-check-rdb/-aof runs on the
placed shards (sampled the same way, every 0.1 s: up to 0.1 s per run is missed), clusterbak itself (wait4, the
checkers' sampled CPU taken out: wait4 counts the children it reaped) and redis-cli (wait4), as microseconds per
key.
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
import threading
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

ROOT = Path(__file__).resolve().parents[1]
BATCH = 2000
TICK = os.sysconf("SC_CLK_TCK")
CHECKERS = ("redis-check-rdb", "redis-check-aof")


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


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class ScratchWatch:
    """Samples the CPU of every redis-server whose working directory is under `root` (the scratch servers, which
    daemonize, so wait4 never sees them) and the load time each logs, until stopped."""

    def __init__(self, root: Path) -> None:
        self.root, self.cpu, self.load_cpu, self.loaded, self.check = str(root), {}, {}, {}, {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.1):
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                pid = int(entry)
                try:
                    if pid in self.check or (pid not in self.cpu
                                             and Path(f"/proc/{pid}/comm").read_text().strip() in CHECKERS
                                             and os.readlink(f"/proc/{pid}/cwd").startswith(self.root)):
                        self.check[pid] = cpu_seconds(pid)
                        continue
                    if pid not in self.cpu:
                        if Path(f"/proc/{pid}/comm").read_text().strip() != "redis-server" or \
                                not os.readlink(f"/proc/{pid}/cwd").startswith(self.root):
                            continue
                    self.cpu[pid] = cpu_seconds(pid)
                    if pid not in self.loaded:
                        log = Path(os.readlink(f"/proc/{pid}/cwd")) / "redis.log"
                        text = log.read_text(errors="replace") if log.exists() else ""
                        if "DB loaded from disk" in text:
                            self.loaded[pid] = float(text.split("DB loaded from disk: ")[1].split()[0])
                            self.load_cpu[pid] = self.cpu[pid]
                except (OSError, ValueError, IndexError):
                    continue

    def finish(self) -> dict:
        self.stop.set()
        self.thread.join()
        return {"scratch_cpu": sum(self.cpu.values()), "scratch_load_cpu": sum(self.load_cpu.values()),
                "check_cpu": sum(self.check.values()),
                "scratch_load_s": sorted(self.loaded.values())}


def targets_cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(p) for p in pids)


def run_floor(targets: list, paths: list[Path], pids: list[int]) -> dict:
    before = targets_cpu(pids)
    t = time.perf_counter()
    procs = [pipe_into(m.port, p) for m, p in zip(targets, paths, strict=True)]
    client_cpu = 0.0
    for p in procs:
        text = p.stdout.read().decode()
        _, status, usage = os.wait4(p.pid, 0)
        assert status == 0 and "errors: 0" in text, text
        client_cpu += usage.ru_utime + usage.ru_stime
    wall = time.perf_counter() - t
    return {"wall": wall, "target_cpu": targets_cpu(pids) - before, "client_cpu": client_cpu}


def run_ours(tree: Path, backup_id: str, work: Path, dst, pids: list[int], parallel: int,
             profile: str | None) -> dict:
    cli = [sys.executable, "-m", "clusterbak"] if not profile else \
        [sys.executable, "-m", "cProfile", "-o", profile, "-m", "clusterbak"]
    scratch = work / "scratch"
    scratch.mkdir(exist_ok=True)
    watch = ScratchWatch(scratch)
    before = targets_cpu(pids)
    t = time.perf_counter()
    proc = subprocess.Popen(cli + ["restore-keys", backup_id, "--dest", str(work / "sets"), "--seed", dst.seed,
                                   "--yes", "--json", "--scratch-dir", str(scratch), "--parallel", str(parallel)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=tree,
                            env={**os.environ, "PYTHONPATH": str(tree)})
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    out = {"wall": wall, "target_cpu": targets_cpu(pids) - before, **watch.finish(),
           "client_cpu": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024}
    out["own_cpu"] = out["client_cpu"] - out["check_cpu"]
    doc = json.loads(stdout)
    assert doc["exit_code"] == 0, doc["errors"]
    out["report"] = doc["data"]["report"]
    return out


def check_alone(work: Path, backup_id: str) -> float:
    """CPU seconds (wait4, exact) of redis-check-rdb on each shard's dump, decompressed beforehand (untimed)."""
    from clusterbak.storage.sink import iter_stored_file

    set_dir = work / "sets" / backup_id
    total = 0.0
    for shard in json.loads((set_dir / "manifest.json").read_text())["shards"]:
        dump = work / "check-alone.rdb"
        with open(dump, "wb") as out:
            for chunk in iter_stored_file(set_dir / shard["file"]["path"], shard["file"]["compression"]):
                out.write(chunk)
        proc = subprocess.Popen(["redis-check-rdb", str(dump)], stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        assert status == 0, f"redis-check-rdb refused shard {shard['index']}"
        total += usage.ru_utime + usage.ru_stime
        dump.unlink()
    return total


def median(values: list[float]) -> float:
    v = sorted(values)
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2


def loads(runs: list[dict]) -> str:
    return ", ".join(f"{r['load_avg']:.1f}" for r in runs)


def per_key_us(run: dict, keys: int, *names: str) -> str:
    return " / ".join(f"{run.get(n, 0.0) / keys * 1e6:.1f}" for n in names)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--value", type=int, default=500)
    ap.add_argument("--parallel", type=int, action="append",
                    help="clusterbak's --parallel (shards at once; default 3); repeat to run each value every round")
    ap.add_argument("--rounds", type=int, default=1, help="floor and clusterbak alternated this many times")
    ap.add_argument("--against", type=Path, action="append", default=[],
                    help="another clusterbak source tree, run in each round too (repeatable)")
    ap.add_argument("--profile", help="write a cProfile of the (first) clusterbak run here")
    args = ap.parse_args()
    parallels = args.parallel or [3]
    trees = [(f"this tree, --parallel {p}" if len(parallels) > 1 else "this tree", ROOT, p) for p in parallels]
    trees += [(f"--against {tree}" + (f", --parallel {p}" if len(parallels) > 1 else ""), tree.resolve(), p)
              for tree in args.against for p in parallels]
    work = Path(tempfile.mkdtemp(prefix="clusterbak-bench-rk-"))
    labs: list[Path] = []
    try:
        t = time.perf_counter()
        src = cluster.up(work / "src", 3, 1, free_base_port(6))
        labs.append(Path(src.dir))
        write_inventory(src)
        fill(src.nodes[0].port, args.keys, args.value, work)
        print(f"filled {args.keys} keys of {args.value} B in {time.perf_counter() - t:.1f}s", file=sys.stderr)
        out = subprocess.run([sys.executable, "-m", "clusterbak", "backup", "--seed", src.seed, "--inventory",
                              src.inventory, "--dest", str(work / "sets"), "--compress", "zstd", "--json"],
                             capture_output=True, text=True, cwd=ROOT)
        doc = json.loads(out.stdout)
        assert doc["exit_code"] == 0, doc["errors"]
        backup_id, keys = doc["data"]["backup_id"], doc["data"]["manifest"]["totals"]["keys"]
        dst = cluster.up(work / "dst", 5, 0, free_base_port(5))
        labs.append(Path(dst.dir))
        targets = masters_of(dst.nodes[0].port)
        pids = [n.pid for n in dst.nodes]
        paths = restore_files(src.nodes[0].port, targets, work)
        payload_bytes = sum(p.stat().st_size for p in paths)
        cluster.down(Path(src.dir))  # the source's memory and CPU are not part of what is measured
        labs.remove(Path(src.dir))

        runs: dict[str, list[dict]] = {"floor": []} | {name: [] for name, _, _ in trees}
        for r in range(args.rounds):
            for name, tree, parallel in [("floor", None, 0)] + trees:
                load = os.getloadavg()[0]
                if tree is None:
                    run = run_floor(targets, paths, pids)
                else:
                    run = run_ours(tree, backup_id, work, dst, pids, parallel,
                                   args.profile if r == 0 and tree == ROOT else None)
                    rep = run["report"]
                    assert rep["totals"]["restored"] == keys, rep["totals"]
                assert dbsize(targets) == keys, (dbsize(targets), keys)
                flush(targets)
                run["load_avg"] = load
                runs[name].append(run)
                print(f"round {r + 1} {name}: {run['wall']:.2f}s (load {load:.2f})", file=sys.stderr)

        floor = runs["floor"]
        print(f"\nreshape 3 -> 5 masters, {keys} keys, {args.value} B random values, "
              f"{payload_bytes / 1e6:.0f} MB of RESTORE commands, {args.rounds} round(s), --parallel "
              f"{', '.join(map(str, parallels))}\n")
        print("| run | wall s (median) | keys/s | vs floor (median of per-round ratios) | load avg at start |")
        print("|---|---|---|---|---|")
        fw = median([r["wall"] for r in floor])
        print(f"| floor: redis-cli --pipe of pre-made RESTOREs, 5 at once | {fw:.2f} | {keys / fw:,.0f} | 1.00x | "
              f"{loads(floor)} |")
        for name, _, _ in trees:
            mine = runs[name]
            w = median([r["wall"] for r in mine])
            ratio = median([f["wall"] / r["wall"] for f, r in zip(floor, mine, strict=True)])
            engine = median([f["wall"] / r["report"]["seconds"] for f, r in zip(floor, mine, strict=True)])
            print(f"| clusterbak restore-keys, {name} (engine only: {engine:.2f}x) | {w:.2f} | {keys / w:,.0f} | "
                  f"{ratio:.2f}x | {loads(mine)} |")
        print("\nCPU per key, microseconds (target masters / scratch servers, of which loading / redis-check-rdb "
              "on the placed shards / clusterbak itself or redis-cli), each round:")
        for name in runs:
            print(f"- {name}: " + "; ".join(per_key_us(r, keys, "target_cpu", "scratch_cpu", "scratch_load_cpu",
                                                       "check_cpu", "own_cpu" if name != "floor" else "client_cpu")
                                            for r in runs[name]))
        alone = check_alone(work, backup_id)
        print(f"\nredis-check-rdb alone on the 3 shards' dumps (exact, wait4): {alone:.2f} s CPU, "
              f"{alone / keys * 1e6:.2f} us/key (load {os.getloadavg()[0]:.1f})")
        for name, _, _ in trees:
            last = runs[name][-1]
            rep = last["report"]
            shards = rep["shards"]
            per_shard = ", ".join(f"{s.get('place_seconds', '-')}+{s.get('check_seconds', '-')}s" for s in shards)
            print(f"\n{name}, last round: placed and checked in {rep.get('place_seconds', '-')}s (per shard, "
                  f"place + redis-check-rdb: {per_shard})")
            print(f"scratch loads {', '.join(str(s['load_seconds']) + 's' for s in shards)}"
                  f" (Redis's own 'DB loaded': {', '.join(f'{x:.2f}s' for x in last['scratch_load_s'])}); copies: "
                  f"{', '.join(str(s['copy_seconds']) + 's' for s in shards)}")
            print(f"copy: {rep['copy']}; batches MIGRATE/DUMP/fallback: {rep['totals']['batches_migrate']}/"
                  f"{rep['totals']['batches_dump']}/{rep['totals']['batches_fallback']}")
            print(f"peak RSS of clusterbak: {max(r['rss_mb'] for r in runs[name]):.0f} MB (goal < 200 MB); "
                  "throughput goal >= 0.7x the floor")
    finally:
        for lab in reversed(labs):
            cluster.down(lab)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
