"""Shared by the rows of issue 14's table: a 3x1 loopback lab filled with random (incompressible) data, timed runs
of `redis-cli --cluster backup` (the anchor) and `clusterbak backup`, alternated, and a markdown table of medians
and ratios.

`--baseline DIR` adds a third series: the `clusterbak` of another checkout (e.g. `git archive main | tar -x -C DIR`),
run in the same rounds, so before/after figures come from the same cluster, data and machine load.
Every clusterbak run is `python -m clusterbak` with the checkout as its working directory (its copy is imported),
with its bytecode compiled first, as an installed package's is: with PYTHONDONTWRITEBYTECODE set (as in some CI and
sandbox shells) every run would otherwise compile ~115 modules from source again (~0.3 s that no installed copy pays).
"""

from __future__ import annotations

import binascii
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from clusterbak.lab import cluster  # noqa: E402
from clusterbak.lab.inventory import write_inventory  # noqa: E402
from clusterbak.lab.procs import free_base_port  # noqa: E402
from clusterbak.model.topology import parse_cluster_nodes  # noqa: E402

PHASES = ("wait_host_s", "catch_up_s", "bgsave_s", "wait_transfer_s", "connect_s", "transfer_s", "verify_s", "store_s",
          "fsync_s")


def require_tools() -> None:
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: install redis-server and redis-tools")


class LabRun:
    """A 3x1 lab on free loopback ports, removed on exit (also on failure, Ctrl-C or SIGTERM: a `timeout` or `kill`
    of the benchmark unwinds like Ctrl-C instead of leaving six servers running)."""

    def __init__(self, workdir: Path, masters: int = 3, replicas: int = 1) -> None:
        self.workdir, self.masters_n, self.replicas_n = workdir, masters, replicas
        self.lab = None

    def __enter__(self) -> LabRun:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        base = free_base_port(self.masters_n * (1 + self.replicas_n))
        self.lab = cluster.up(self.workdir / "lab", self.masters_n, self.replicas_n, base)
        self.seed = self.lab.seed
        self.inventory = str(write_inventory(self.lab))
        return self

    def __exit__(self, *exc) -> None:
        try:
            cluster.down(self.workdir / "lab")
        except Exception as err:  # noqa: BLE001 - keep cleaning up
            print(f"lab down failed: {err}", file=sys.stderr)

    def topology(self):  # type: ignore[no-untyped-def]
        host, port = self.seed.rsplit(":", 1)
        c = redis.Redis(host=host, port=int(port), decode_responses=True)
        try:
            return parse_cluster_nodes(c.execute_command("CLUSTER", "NODES"))
        finally:
            c.close()

    def fill(self, total_bytes: int, value_size: int = 1000, mixed: bool = False, seed: int = 7) -> int:
        """Random values straight to each master (keys hashed into its slots), pipelined; then wait for the
        replicas. mixed: strings, hashes, lists and sets of small random members instead of plain strings.
        Returns the number of keys written."""
        topo = self.topology()
        masters = [n for n in topo.nodes if n.is_master]
        per_master = total_bytes // len(masters)
        keys = 0
        rng = random.Random(seed)
        for index, m in enumerate(masters):
            ranges = [(r.start, r.end) for r in m.slots]
            tags = _hashtags(ranges, 64, f"m{index}t")
            host, port = m.address.rsplit(":", 1)
            client = redis.Redis(host=host, port=int(port), socket_timeout=120)
            pipe = client.pipeline(transaction=False)
            written = pending = i = 0
            while written < per_master:
                tag = tags[i % len(tags)]
                if not mixed:
                    pipe.set(f"k:{{{tag}}}:{i}", os.urandom(value_size))
                    written += value_size
                else:
                    kind = i % 4
                    n = rng.randint(value_size // 2, value_size * 3 // 2)
                    name = f"{'shlz'[kind]}:{{{tag}}}:{i}"
                    if kind == 0:
                        pipe.set(name, os.urandom(n))
                    elif kind == 1:
                        pipe.hset(name, mapping={f"f{j}": os.urandom(n // 4) for j in range(4)})
                    elif kind == 2:
                        pipe.rpush(name, *[os.urandom(n // 4) for _ in range(4)])
                    else:
                        pipe.sadd(name, *[os.urandom(n // 4) for _ in range(4)])
                    written += n
                pending += 1
                i += 1
                if pending >= 2000:
                    pipe.execute()
                    pending = 0
            pipe.execute()
            client.close()
            keys += i
        self.wait_replicas()
        return keys

    def wait_replicas(self, timeout: float = 300.0) -> None:
        topo = self.topology()
        by_id = {n.node_id: n for n in topo.nodes}
        deadline = time.monotonic() + timeout
        for r in (n for n in topo.nodes if not n.is_master):
            m = by_id[r.master_id]
            mc = redis.Redis(host="127.0.0.1", port=int(m.address.rsplit(":", 1)[1]), decode_responses=True)
            rc = redis.Redis(host="127.0.0.1", port=int(r.address.rsplit(":", 1)[1]), decode_responses=True)
            try:
                target = int(mc.info("replication")["master_repl_offset"])
                while int(rc.info("replication").get("slave_repl_offset", -1)) < target:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"replica {r.address} did not catch up")
                    time.sleep(0.05)
            finally:
                mc.close()
                rc.close()


def _hashtags(ranges: list[tuple[int, int]], count: int, prefix: str) -> list[str]:
    found, i = [], 0
    while len(found) < count:
        tag = f"{prefix}{i}"
        if any(a <= (binascii.crc_hqx(tag.encode(), 0) & 0x3FFF) <= b for a, b in ranges):
            found.append(tag)
        i += 1
    return found


@dataclass
class Series:
    name: str
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)  # user + sys seconds of the process (and its children)
    phases: list[dict[str, float]] = field(default_factory=list)  # per run: phase -> summed seconds over shards
    raw: int = 0
    stored: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.walls)

    @property
    def cpu(self) -> str:
        return f"{statistics.median(self.cpus):.2f}" if self.cpus else "-"


def _cpu_of_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_anchor(seed: str, workdir: Path, series: Series) -> None:
    dest = workdir / "anchor-out"
    dest.mkdir()
    try:
        t0, c0 = time.perf_counter(), _cpu_of_children()
        proc = subprocess.run(["redis-cli", "--cluster", "backup", seed, str(dest)], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        series.cpus.append(_cpu_of_children() - c0)
        if proc.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster backup exited {proc.returncode}: {proc.stderr[-2000:]}")
        series.walls.append(wall)
        series.raw = series.stored = sum(p.stat().st_size for p in dest.glob("*.rdb"))
    finally:
        shutil.rmtree(dest, ignore_errors=True)


_COMPILED: set[Path] = set()


def compile_checkout(checkout: Path) -> None:
    """Write the checkout's bytecode once (what `pip install` does for an installed copy)."""
    if checkout not in _COMPILED:
        subprocess.run([sys.executable, "-m", "compileall", "-q", "clusterbak"], cwd=checkout, check=True,
                       capture_output=True)
        _COMPILED.add(checkout)


def run_clusterbak(checkout: Path, lab: LabRun, workdir: Path, series: Series, extra: tuple[str, ...] = ()) -> dict:
    compile_checkout(checkout)
    dest = workdir / "cb-out"
    argv = [sys.executable, "-m", "clusterbak", "backup", "--seed", lab.seed, "--inventory", lab.inventory,
            "--dest", str(dest), "--json", *extra]
    try:
        t0, c0 = time.perf_counter(), _cpu_of_children()
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=checkout, stdin=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        series.cpus.append(_cpu_of_children() - c0)
        if proc.returncode != 0:
            raise RuntimeError(f"clusterbak ({checkout}) exited {proc.returncode}:\n{proc.stdout[-2000:]}\n"
                               f"{proc.stderr[-2000:]}")
        series.walls.append(wall)
        m = json.loads(proc.stdout)["data"]["manifest"]
        series.raw, series.stored = m["totals"]["raw_bytes"], m["totals"]["stored_bytes"]
        series.phases.append(phase_sums(m))
        return m
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def phase_sums(manifest: dict) -> dict[str, float]:
    """Seconds per phase summed over shards; a set from before per-phase timings has only BGSAVE and transfer."""
    out: dict[str, float] = {}
    for s in manifest["shards"]:
        timings = s.get("timings") or {"bgsave_s": s["save"]["duration_s"], "transfer_s": s.get("transfer_seconds", 0)}
        for k, v in timings.items():
            if k in PHASES:
                out[k] = out.get(k, 0.0) + float(v)
    return out


def alternate(jobs: list, runs: int) -> None:
    """`runs` rounds of every job; the order rotates each round so none always runs first (cold) or last."""
    for r in range(runs):
        for k in range(len(jobs)):
            jobs[(r + k) % len(jobs)]()


def table(title: str, anchor: Series, others: list[Series]) -> None:
    print()
    print(title)
    print()
    print("| what | runs (s) | median s | ratio vs anchor | CPU s | RDB MB | stored MB "
          "| phases, median of per-run sums (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for s in [anchor, *others]:
        ratio = "1.00x" if s is anchor else f"{s.median / anchor.median:.2f}x"
        phases = "-"
        if s.phases:
            keys = [k for k in PHASES if any(k in p for p in s.phases)]
            phases = ", ".join(f"{k[:-2]} {statistics.median(p.get(k, 0.0) for p in s.phases):.2f}" for k in keys)
        print(f"| {s.name} | {' '.join(f'{w:.2f}' for w in s.walls)} | {s.median:.2f} | {ratio} | {s.cpu} "
              f"| {s.raw / 1e6:,.1f} | {s.stored / 1e6:,.1f} | {phases} |")
    print()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the end; MB = 10^6 bytes; CPU s: user + "
          "sys seconds of the command (the anchor's: redis-cli's; the servers' forks are in neither)")
