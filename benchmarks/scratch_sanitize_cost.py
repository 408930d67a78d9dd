"""What `sanitize-dump-payload yes` costs a scratch server's load (restore-keys, docs/security.md).

Run:  .venv/bin/python benchmarks/scratch_sanitize_cost.py [--keys 500000] [--rounds 3]

For each kind of value (small hashes: listpack; small sets of integers: intset; 500-byte strings: nothing to check),
one standalone redis-server is filled with --keys keys and SAVEd; then that dump is loaded by a fresh server with
`sanitize-dump-payload no` and with `yes`, alternately, --rounds times. Printed: Redis's own "DB loaded from disk"
seconds and the loading server's CPU (utime+stime from /proc once loaded), medians, per key, and the ratio.
Everything it starts is stopped by pid and its directory removed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402

from clusterbak.lab.procs import free_base_port, start_standalone, stop_pid  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
KINDS = {
    "hash, 10 fields of 8 random bytes (listpack)":
        lambda p, i: p.hset(b"h:%d" % i, mapping={b"f%d" % j: os.urandom(8) for j in range(10)}),
    "set of 10 integers (intset)": lambda p, i: p.sadd(b"s:%d" % i, *range(i, i + 10)),
    "string, 500 random bytes": lambda p, i: p.set(b"k:%d" % i, os.urandom(500)),
}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def make_dump(work: Path, keys: int, add) -> Path:
    d = work / "fill"
    d.mkdir()
    port = free_base_port(1)
    pid = start_standalone(d, port)
    try:
        c = redis.Redis(port=port)
        for start in range(0, keys, 1000):
            pipe = c.pipeline(transaction=False)
            for i in range(start, min(keys, start + 1000)):
                add(pipe, i)
            pipe.execute()
        c.save()
    finally:
        stop_pid(pid)
    dump = work / "dump.rdb"
    shutil.move(d / "dump.rdb", dump)
    shutil.rmtree(d)
    return dump


def load_once(work: Path, dump: Path, sanitize: str) -> tuple[float, float]:
    d = work / f"load-{sanitize}"
    d.mkdir()
    shutil.copy(dump, d / "dump.rdb")
    port = free_base_port(1)
    pid = start_standalone(d, port, f"dbfilename dump.rdb\nsanitize-dump-payload {sanitize}\n", timeout=120)
    try:
        c = redis.Redis(port=port, socket_timeout=600)
        while c.info("persistence")["loading"]:
            time.sleep(0.02)
        cpu = cpu_seconds(pid)
        text = (d / "redis.log").read_text()
        found = re.search(r"DB loaded from disk: ([0-9.]+) seconds", text)
        assert found, text[-500:]
        return float(found.group(1)), cpu
    finally:
        stop_pid(pid)
        shutil.rmtree(d)


def median(values: list[float]) -> float:
    v = sorted(values)
    return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=500_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="clusterbak-bench-sanitize-"))
    rows = []
    try:
        for kind, add in KINDS.items():
            dump = make_dump(work, args.keys, add)
            got: dict[str, list[tuple[float, float]]] = {"no": [], "yes": []}
            loads = []
            for _ in range(args.rounds):
                loads.append(os.getloadavg()[0])
                for mode in ("no", "yes"):
                    got[mode].append(load_once(work, dump, mode))
            dump.unlink()
            no_s, yes_s = (median([x[0] for x in got[m]]) for m in ("no", "yes"))
            no_c, yes_c = (median([x[1] for x in got[m]]) for m in ("no", "yes"))
            rows.append(f"| {kind} | {no_s:.2f} / {yes_s:.2f} | {no_c / args.keys * 1e6:.2f} / "
                        f"{yes_c / args.keys * 1e6:.2f} | {yes_c / no_c:.2f}x | "
                        f"{', '.join(f'{x:.1f}' for x in loads)} |")
            print(f"{kind}: done", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.keys} keys per kind, {args.rounds} alternating rounds, medians\n")
    print("| value | DB loaded s, sanitize no / yes | load CPU us/key, no / yes | CPU yes/no | load avg |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
