"""Issue 14, row 1: ~350 MB of random 1 KB values, all nodes on one host: clusterbak vs `redis-cli --cluster backup`.

Run:  python benchmarks/row_single_host.py [--mb 150] [--runs 3] [--baseline DIR] [--compressible] [--with-sync]

A 3x1 loopback lab is filled with random (incompressible) 1 KB values straight to each master; then --runs rounds,
alternated, of the anchor (serial, from the masters, no verification, no nodes.conf) and `clusterbak backup` with
its defaults (and the --baseline checkout's, when given). Prints median wall seconds and the ratio to the anchor
side by side, and where clusterbak's time went (per-phase sums from the manifest). --mb defaults to 150 so a run
stays under a few minutes on 2 cores; pass --mb 350 for the issue's size. --compressible fills text-like values
instead (zstd helps there), reported as a separate case.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from anchor_common import REPO, LabRun, Series, alternate, require_tools, run_anchor, run_clusterbak, table  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=150.0, help="MB (10^6) of values to load")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--baseline", type=Path, default=None, help="another checkout to time in the same rounds")
    ap.add_argument("--compressible", action="store_true", help="text-like values instead of random ones")
    ap.add_argument("--extra", default="", help="more clusterbak backup options, space separated")
    ap.add_argument("--with-sync", action="store_true", help="also time `--via sync` (PSYNC streams) in the rounds")
    args = ap.parse_args()
    require_tools()
    extra = tuple(args.extra.split())
    with tempfile.TemporaryDirectory(prefix="cb-row1-") as tmp, LabRun(Path(tmp)) as lab:
        work = Path(tmp)
        if args.compressible:
            sys.path.insert(0, str(REPO / "benchmarks"))
            from backup_vs_anchor import Filled, fill, text_pool
            fill(int(lab.seed.rsplit(":", 1)[1]), int(args.mb * 1e6), 0, text_pool(32_000_000), Filled())
            keys = "text-like"
        else:
            keys = f"{lab.fill(int(args.mb * 1e6)):,} random 1 KB"
        anchor, now = Series("anchor redis-cli --cluster backup"), Series(f"clusterbak {' '.join(extra)} (this tree)")
        jobs = [lambda: run_anchor(lab.seed, work, anchor), lambda: run_clusterbak(REPO, lab, work, now, extra)]
        series = [now]
        if args.baseline is not None:
            before = Series(f"clusterbak {' '.join(extra)} (baseline {args.baseline})")
            jobs.append(lambda: run_clusterbak(args.baseline, lab, work, before, extra))
            series.insert(0, before)
        if args.with_sync:
            synced = Series(f"clusterbak --via sync {' '.join(extra)} (this tree)")
            jobs.append(lambda: run_clusterbak(REPO, lab, work, synced, (*extra, "--via", "sync")))
            series.append(synced)
        run_clusterbak(REPO, lab, work, Series("warm-up"), extra)
        alternate(jobs, args.runs)
        table(f"row 1: {args.mb:.0f} MB, {keys} values, 3 masters x 1 replica on 127.0.0.1, one host; "
              f"median of {args.runs} alternated runs", anchor, series)
    return 0


if __name__ == "__main__":
    sys.exit(main())
