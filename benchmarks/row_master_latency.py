"""Issue 14: master latency during a backup. Replicas fork for clusterbak; the masters fork for the anchor.

Run:  python benchmarks/row_master_latency.py [--mb 150] [--runs 3]

A 3x1 loopback lab filled with random 1 KB values; one probe thread per master sends GET of an existing key in a
loop (one connection each) and records every round trip. Phases, alternated per round: idle (as long as the last
backup took), during `clusterbak backup` (defaults: replicas save), during `redis-cli --cluster backup` (the masters
save). Prints p50 / p99 / max of the masters' round trips per phase and p99 vs idle (goal for clusterbak <= 1.1x).
All on one host with 2 cores, so CPU the backup uses shows up as latency too: the figures include that.

--pin gives the masters a CPU of their own, as separate hosts do in production: the masters (every thread) and the
probe on CPU 0; the replicas, clusterbak and redis-cli on CPU 1. A fork inherits its parent's CPU, so the anchor's
BGSAVEs still run beside the masters, and clusterbak's beside the replicas.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis  # noqa: E402
from anchor_common import REPO, LabRun, require_tools  # noqa: E402


class Probe:
    """GET in a loop against every master until stopped; round trips in microseconds."""

    def __init__(self, masters: list[tuple[str, int]], key_by_master: dict[int, str]) -> None:
        self.masters, self.keys = masters, key_by_master
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=m, daemon=True) for m in masters]

    def _run(self, host: str, port: int) -> None:
        client = redis.Redis(host=host, port=port, socket_timeout=10)
        key = self.keys[port]
        local = []
        while not self._stop.is_set():
            t = time.perf_counter()
            client.get(key)
            local.append((time.perf_counter() - t) * 1e6)
            time.sleep(0.001)
        client.close()
        with self._lock:
            self.samples.extend(local)

    def __enter__(self) -> Probe:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


def pin_servers(lab: LabRun) -> None:
    """Masters (all their threads) on CPU 0, replicas on CPU 1; this process (and the probe threads) on CPU 0."""
    for node in lab.topology().nodes:
        c = redis.Redis(host=node.host, port=node.port)
        pid = int(c.info("server")["process_id"])
        c.close()
        for tid in os.listdir(f"/proc/{pid}/task"):
            os.sched_setaffinity(int(tid), {0} if node.is_master else {1})
    os.sched_setaffinity(0, {0})


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=150.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--extra", action="append", default=[], metavar="ARGS",
                    help='another clusterbak phase with these backup flags, e.g. --extra "--nice 10" (repeatable)')
    ap.add_argument("--wrap", action="append", default=[], metavar="CMD",
                    help='another clusterbak phase run under this command, e.g. --wrap "nice -n 10" (repeatable)')
    ap.add_argument("--pin", action="store_true",
                    help="masters and the probe on CPU 0; replicas, clusterbak and redis-cli on CPU 1")
    args = ap.parse_args()
    require_tools()
    if args.pin and len(os.sched_getaffinity(0)) < 2:
        sys.exit("--pin needs 2 CPUs")
    other_cpu = (lambda: os.sched_setaffinity(0, {1})) if args.pin else None
    with tempfile.TemporaryDirectory(prefix="cb-lat-") as tmp, LabRun(Path(tmp)) as lab:
        work = Path(tmp)
        lab.fill(int(args.mb * 1e6))
        if args.pin:
            pin_servers(lab)
        masters = [(n.host, n.port) for n in lab.topology().nodes if n.is_master]
        keys = {}
        for host, port in masters:
            c = redis.Redis(host=host, port=port)
            keys[port] = c.randomkey().decode()
            c.close()
        phases: dict[str, list[float]] = {"idle": [], "clusterbak backup": [], "anchor redis-cli --cluster backup": []}
        variants = {f"clusterbak backup {x}": (x.split(), []) for x in args.extra}
        variants.update({f"{w} clusterbak backup": ([], w.split()) for w in args.wrap})
        phases.update({name: [] for name in variants})
        last = 3.0

        def during(name: str, argv: list[str] | None, cwd: Path | None = None) -> None:
            nonlocal last
            dest = work / "out"
            dest.mkdir()  # redis-cli --cluster backup writes into an existing directory
            with Probe(masters, keys) as probe:
                t = time.perf_counter()
                if argv is None:
                    time.sleep(last)
                elif argv is cb:
                    flags, wrap = variants.get(name, ([], []))
                    subprocess.run([*wrap, *argv, str(dest / "sets"), *flags], check=True, capture_output=True,
                                   cwd=cwd, preexec_fn=other_cpu)
                    if name == "clusterbak backup":
                        last = time.perf_counter() - t
                else:
                    subprocess.run([*argv, str(dest)], check=True, capture_output=True, cwd=cwd, preexec_fn=other_cpu)
            phases[name].extend(probe.samples)
            subprocess.run(["rm", "-rf", str(dest)], check=True)

        cb = [sys.executable, "-m", "clusterbak", "backup", "--seed", lab.seed, "--inventory", lab.inventory,
              "--quiet", "--dest"]
        anchor = ["redis-cli", "--cluster", "backup", lab.seed]
        jobs = [lambda: during("idle", None), lambda: during("clusterbak backup", cb, REPO),
                lambda: during("anchor redis-cli --cluster backup", anchor)]
        jobs += [lambda name=name: during(name, cb, REPO) for name in variants]
        for r in range(args.runs):
            for k in range(len(jobs)):
                jobs[(r + k) % len(jobs)]()
        idle99 = pct(phases["idle"], 99)
        print()
        pinned = "; masters + probe on CPU 0, replicas + backup clients on CPU 1" if args.pin else ""
        print(f"master latency (GET round trip, 3 masters, {args.mb:.0f} MB of random 1 KB values, {args.runs} "
              f"alternated rounds; microseconds{pinned})")
        print()
        print("| phase | samples | p50 us | p99 us | max us | p99 vs idle |")
        print("|---|---|---|---|---|---|")
        for name, values in phases.items():
            print(f"| {name} | {len(values):,} | {statistics.median(values):.0f} | {pct(values, 99):.0f} "
                  f"| {max(values):.0f} | {pct(values, 99) / idle99:.2f}x |")
        print()
        ratio = pct(phases["clusterbak backup"], 99) / idle99
        print(f"goal: clusterbak p99 <= 1.1x idle: {ratio:.2f}x ({'met' if ratio <= 1.1 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
