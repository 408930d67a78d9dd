"""Issue 14, row 3: fixed overhead on 20k small mixed keys (~4 MB): clusterbak vs `redis-cli --cluster backup`.

Run:  python benchmarks/row_fixed_overhead.py [--keys 20000] [--runs 3] [--baseline DIR] [--with-sync]

A 3x1 loopback lab gets --keys small random keys (strings, hashes, lists, sets; ~200 bytes each); then --runs
rounds, alternated, of the anchor and `clusterbak backup` (and the --baseline checkout's), median wall seconds and
ratios side by side. Also times `python -m clusterbak --help` (interpreter start + imports) for each checkout.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from anchor_common import REPO, LabRun, Series, alternate, require_tools, run_anchor, run_clusterbak, table  # noqa: E402


def help_seconds(checkout: Path, runs: int = 5) -> float:
    walls = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "clusterbak", "--help"], cwd=checkout, capture_output=True, check=True)
        walls.append(time.perf_counter() - t0)
    return statistics.median(walls)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--baseline", type=Path, default=None, help="another checkout to time in the same rounds")
    ap.add_argument("--with-sync", action="store_true", help="also time `--via sync` (PSYNC streams) in the rounds")
    args = ap.parse_args()
    require_tools()
    with tempfile.TemporaryDirectory(prefix="cb-row3-") as tmp, LabRun(Path(tmp)) as lab:
        work = Path(tmp)
        keys = lab.fill(args.keys * 200, value_size=200, mixed=True)
        anchor, now = Series("anchor redis-cli --cluster backup"), Series("clusterbak (this tree)")
        jobs = [lambda: run_anchor(lab.seed, work, anchor), lambda: run_clusterbak(REPO, lab, work, now)]
        series = [now]
        if args.baseline is not None:
            before = Series(f"clusterbak (baseline {args.baseline})")
            jobs.append(lambda: run_clusterbak(args.baseline, lab, work, before))
            series.insert(0, before)
        if args.with_sync:
            synced = Series("clusterbak --via sync (this tree)")
            jobs.append(lambda: run_clusterbak(REPO, lab, work, synced, ("--via", "sync")))
            series.append(synced)
        run_clusterbak(REPO, lab, work, Series("warm-up"))
        alternate(jobs, args.runs)
        table(f"row 3: fixed overhead, {keys:,} small mixed random keys, 3 masters x 1 replica on 127.0.0.1; "
              f"median of {args.runs} alternated runs", anchor, series)
        print(f"`python -m clusterbak --help`, median of 5: this tree {help_seconds(REPO):.3f}s"
              + (f", baseline {help_seconds(args.baseline):.3f}s" if args.baseline is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
