"""Side by side: `clusterbak backup` vs the anchor `redis-cli --cluster backup`, same lab cluster, same data.

Run standalone:  /tmp/v/bin/python benchmarks/backup_vs_anchor.py [--gb 1.0] [--small-gb 0.25] [--runs 3] [--no-ssh]

One run does all of it:
1. starts a 3x1 lab cluster on free loopback ports and fills it fast: per master, keys with `{tag}` hashtags whose
   CRC16 slot that master owns, pipelined straight to it (mostly ~100 KB text-like values that compress about 2.7x
   with zstd, plus some small keys), then waits until every replica has its master's offset;
2. at --small-gb: one anchor run and one clusterbak run (peak RSS, and a first ratio); tops the cluster up to --gb;
3. at --gb: --runs rounds, alternated (the order rotates each round), of
     anchor     `redis-cli --cluster backup SEED DIR`      (serial, from the masters, no verification)
     clusterbak `clusterbak backup --seed --inventory --dest` (verification always on), zstd and --compress none;
   then the same clusterbak runs through the SSH transport (a throwaway sshd on loopback, a second inventory);
4. prints one markdown table: median wall seconds, ratio clusterbak/anchor (goal <= 0.7x), peak RSS (goal flat
   and < 150 MB), sizes and where clusterbak's time went (sum of BGSAVE seconds, sum of transfer seconds).

Wall time and peak RSS of every command come from /usr/bin/time (`%e %M`) when installed, else from
perf_counter and RUSAGE_CHILDREN. Everything (redis-servers, sshd, directories) is removed on the way out, also
on failure or Ctrl-C. MB = 10^6 bytes.

Note on the anchor: redis-cli does not announce `capa eof`, so each master answers its SYNC with a disk-based
BGSAVE (it writes, fsyncs and then sends its own dump.rdb) even with repl-diskless-sync yes; redis-cli streams that
into <dir>/redis-node-<ip>-<port>-<id>.rdb, fsyncs it, and writes nodes.json. One master after the other.
"""

from __future__ import annotations

import argparse
import binascii
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402

from clusterbak.lab import cluster  # noqa: E402
from clusterbak.lab.inventory import render_inventory, write_inventory  # noqa: E402
from clusterbak.lab.procs import free_base_port  # noqa: E402
from clusterbak.lab.sshd import start_sshd  # noqa: E402
from clusterbak.model.topology import parse_cluster_nodes  # noqa: E402
from clusterbak.storage.sink import ZSTD_LEVEL  # noqa: E402

BIG_VALUE = 100_000
SMALL_PER_GB = 60_000  # small keys (50-500 bytes) per GB of data, spread over the masters
TAGS_PER_MASTER = 16
BATCH_BYTES = 8_000_000
GOAL_RATIO = 0.7
GOAL_RSS_MB = 150
TIME_BIN = "/usr/bin/time"


# -- data --------------------------------------------------------------------------------------------------


def text_pool(size: int, seed: int = 11) -> bytes:
    """`size` bytes of word-ish text with JSON-ish field names and numbers: zstd -3 gets ~2.7x, LZF less."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = ["".join(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(3000)]
    tokens = words + [f'"{w}":' for w in words[:60]] + [str(rng.randint(0, 10**6)) for _ in range(2000)]
    tokens += [", ", "{", "}", ". "]
    out = " ".join(rng.choices(tokens, k=size // 6 + 1000)).encode()
    while len(out) < size:
        out += out[: size - len(out)]
    return out[:size]


def hashtags(ranges: list[tuple[int, int]], count: int, prefix: str) -> list[str]:
    """`count` hashtags whose CRC16 slot (binascii.crc_hqx & 0x3FFF) falls in one of `ranges`."""
    found, i = [], 0
    while len(found) < count:
        tag = f"{prefix}{i}"
        slot = binascii.crc_hqx(tag.encode(), 0) & 0x3FFF
        if any(a <= slot <= b for a, b in ranges):
            found.append(tag)
        i += 1
    return found


@dataclass
class Filled:
    value_bytes: int = 0
    keys: int = 0
    seconds: float = 0.0


def masters_and_replicas(seed_port: int) -> tuple[list, list]:
    c = redis.Redis(host="127.0.0.1", port=seed_port, decode_responses=True)
    try:
        topo = parse_cluster_nodes(c.execute_command("CLUSTER", "NODES"))
    finally:
        c.close()
    masters = [n for n in topo.nodes if n.is_master]
    replicas = [n for n in topo.nodes if not n.is_master]
    return masters, replicas


def fill(seed_port: int, target_bytes: int, round_no: int, pool: bytes, filled: Filled) -> None:
    """Write ~`target_bytes` of values (prefix `r<round_no>`) straight to each master, one thread per master."""
    t0 = time.perf_counter()
    masters, replicas = masters_and_replicas(seed_port)
    per_master = target_bytes // len(masters)
    small_per_master = int(SMALL_PER_GB * target_bytes / 1e9) // len(masters)
    errors: list[BaseException] = []
    counts: list[tuple[int, int]] = []
    lock = threading.Lock()

    def one(index: int, node) -> None:  # type: ignore[no-untyped-def]
        try:
            rng = random.Random(round_no * 1000 + index)
            ranges = [(r.start, r.end) for r in node.slots]
            tags = hashtags(ranges, TAGS_PER_MASTER, f"r{round_no}m{index}t")
            host, port = node.address.rsplit(":", 1)
            client = redis.Redis(host=host, port=int(port), socket_timeout=120)
            pipe = client.pipeline(transaction=False)
            written = keys = pending = 0
            small_left = small_per_master
            i = 0
            while written < per_master or small_left > 0:
                tag = tags[i % len(tags)]
                if written < per_master:
                    off = rng.randrange(0, len(pool) - BIG_VALUE)
                    value = b"%d|" % i + pool[off : off + BIG_VALUE]
                    pipe.set(f"big:{{{tag}}}:{round_no}:{i}", value)
                    written += len(value)
                    pending += len(value)
                    keys += 1
                for _ in range(6 if small_left > 0 else 0):
                    n = rng.randint(50, 500)
                    off = rng.randrange(0, len(pool) - n)
                    if small_left % 3:
                        pipe.set(f"s:{{{tag}}}:{round_no}:{i}:{small_left}", pool[off : off + n])
                    else:
                        pipe.hset(f"h:{{{tag}}}:{round_no}:{i}:{small_left}", mapping={
                            "name": pool[off : off + 20], "body": pool[off : off + n], "n": str(i)})
                    small_left -= 1
                    keys += 1
                    pending += n
                if pending >= BATCH_BYTES:
                    pipe.execute()
                    pending = 0
                i += 1
            pipe.execute()
            client.close()
            with lock:
                counts.append((written, keys))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i, m)) for i, m in enumerate(masters)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    wait_replicas_synced(masters, replicas)
    filled.value_bytes += sum(w for w, _ in counts)
    filled.keys += sum(k for _, k in counts)
    filled.seconds += time.perf_counter() - t0


def wait_replicas_synced(masters, replicas, timeout: float = 300.0) -> None:  # type: ignore[no-untyped-def]
    """Until every replica's slave_repl_offset has reached its master's master_repl_offset."""
    by_id = {m.node_id: m for m in masters}
    deadline = time.monotonic() + timeout
    for r in replicas:
        m = by_id[r.master_id]
        mc = redis.Redis(host="127.0.0.1", port=int(m.address.rsplit(":", 1)[1]), decode_responses=True)
        rc = redis.Redis(host="127.0.0.1", port=int(r.address.rsplit(":", 1)[1]), decode_responses=True)
        try:
            target = int(mc.info("replication")["master_repl_offset"])
            while True:
                info = rc.info("replication")
                if info.get("master_link_status") == "up" and int(info.get("slave_repl_offset", -1)) >= target:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"replica {r.address} did not catch up with {m.address} in {timeout:.0f}s")
                time.sleep(0.1)
        finally:
            mc.close()
            rc.close()


def dataset_bytes(seed_port: int) -> int:
    masters, _ = masters_and_replicas(seed_port)
    total = 0
    for m in masters:
        c = redis.Redis(host="127.0.0.1", port=int(m.address.rsplit(":", 1)[1]))
        try:
            total += int(c.info("memory")["used_memory_dataset"])
        finally:
            c.close()
    return total


# -- running and measuring ---------------------------------------------------------------------------------


@dataclass
class Run:
    wall: float
    rss_mb: float
    out: str = ""


def timed(argv: list[str], env: dict | None = None) -> Run:
    """Run argv; wall seconds and the peak RSS of the process (MB). Raises with its output on failure."""
    use_time = os.access(TIME_BIN, os.X_OK)
    with tempfile.NamedTemporaryFile("r", suffix=".time") as tf:
        full = [TIME_BIN, "-f", "%e %M", "-o", tf.name, *argv] if use_time else argv
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.perf_counter()
        proc = subprocess.run(full, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:3])} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n"
                               f"{proc.stderr[-3000:]}")
        if use_time:
            rss_kb = int(tf.read().split()[-1])
        else:  # the max over all children so far: only meaningful if it grew
            rss_kb = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before)
    return Run(wall, rss_kb / 1024 * 1.048576, proc.stdout)


@dataclass
class Series:
    name: str
    runs: list[Run] = field(default_factory=list)
    stored: int = 0
    raw: int = 0
    save_s: list[float] = field(default_factory=list)
    transfer_s: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(r.wall for r in self.runs)

    @property
    def rss(self) -> float:
        return max(r.rss_mb for r in self.runs)


def run_anchor(seed: str, workdir: Path, series: Series, masters: int) -> None:
    dest = workdir / "anchor-out"
    dest.mkdir()
    try:
        series.runs.append(timed(["redis-cli", "--cluster", "backup", seed, str(dest)]))
        rdbs = sorted(dest.glob("redis-node-*.rdb"))
        if len(rdbs) != masters or not (dest / "nodes.json").exists():
            raise RuntimeError(f"redis-cli --cluster backup left {[p.name for p in dest.iterdir()]}")
        for p in rdbs:
            with open(p, "rb") as f:
                if not f.read(9).startswith(b"REDIS"):
                    raise RuntimeError(f"{p} is not an RDB file")
        series.raw = series.stored = sum(p.stat().st_size for p in rdbs)
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def run_clusterbak(seed: str, inventory: str, workdir: Path, series: Series, compress: str,
                   extra: tuple[str, ...] = ()) -> None:
    dest = workdir / "clusterbak-out"
    exe = str(Path(sys.executable).with_name("clusterbak"))
    # always explicit: the default is `auto` now, so leaving the flag out for "zstd" measured auto under a zstd label
    argv = [exe, "backup", "--seed", seed, "--inventory", inventory, "--dest", str(dest), "--json",
            "--compress", compress, *extra]
    try:
        run = timed(argv)
        series.runs.append(run)
        doc = json.loads(run.out)
        m = doc["data"]["manifest"]
        series.raw, series.stored = m["totals"]["raw_bytes"], m["totals"]["stored_bytes"]
        series.save_s.append(sum(s["save"]["duration_s"] for s in m["shards"]))
        series.transfer_s.append(sum(s["transfer_seconds"] for s in m["shards"]))
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def fmt_mb(n: float) -> str:
    return f"{n / 1e6:,.0f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gb", type=float, default=1.0, help="data to load for the timed runs (GB of values)")
    ap.add_argument("--small-gb", type=float, default=0.25, help="first, smaller size (RSS flatness)")
    ap.add_argument("--runs", type=int, default=3, help="rounds at --gb (each: anchor, zstd, none)")
    ap.add_argument("--ssh-runs", type=int, default=2, help="rounds through the SSH transport (0: skip)")
    ap.add_argument("--no-ssh", action="store_true", help="skip the SSH transport")
    ap.add_argument("--parallel", type=int, default=None, help="pass --parallel N to clusterbak")
    args = ap.parse_args()
    for tool in ("redis-server", "redis-cli"):
        if shutil.which(tool) is None:
            print(f"{tool} not found: apt-get install redis-server redis-tools", file=sys.stderr)
            return 2

    extra = ("--parallel", str(args.parallel)) if args.parallel else ()
    load_at_start = f"{os.getloadavg()[0]:.2f}"
    workdir = Path(tempfile.mkdtemp(prefix="clusterbak-bva-"))
    lab_dir = workdir / "lab"
    lab = sshd = None
    rows: list[tuple[str, Series, Series]] = []  # (size label, series, its anchor)
    try:
        base = free_base_port(6)
        t0 = time.perf_counter()
        lab = cluster.up(lab_dir, 3, 1, base)
        inventory = str(write_inventory(lab))
        seed = lab.seed
        print(f"lab 3x1 on 127.0.0.1:{base}-{base + 5} in {time.perf_counter() - t0:.1f}s", flush=True)
        pool = text_pool(32_000_000)
        filled = Filled()

        # -- small size: one of each (RSS, first ratio)
        fill(base, int(args.small_gb * 1e9), 0, pool, filled)
        print(f"filled {fmt_mb(filled.value_bytes)} MB in {filled.keys:,} keys ({filled.seconds:.1f}s); "
              f"dataset {fmt_mb(dataset_bytes(base))} MB", flush=True)
        small = f"{filled.value_bytes / 1e9:.2f} GB"
        s_anchor, s_zstd = Series("anchor redis-cli --cluster backup"), Series("clusterbak local zstd")
        run_clusterbak(seed, inventory, workdir, s_zstd, "zstd", extra)  # also warms code paths and caches
        s_zstd.runs.clear(), s_zstd.save_s.clear(), s_zstd.transfer_s.clear()
        run_anchor(seed, workdir, s_anchor, 3)
        run_clusterbak(seed, inventory, workdir, s_zstd, "zstd", extra)
        rows += [(small, s_anchor, s_anchor), (small, s_zstd, s_anchor)]
        print(f"{small}: anchor {s_anchor.median:.2f}s, clusterbak zstd {s_zstd.median:.2f}s "
              f"({s_zstd.rss:.0f} MB RSS)", flush=True)

        # -- big size: alternated rounds
        if args.gb > args.small_gb:
            fill(base, int((args.gb - args.small_gb) * 1e9), 1, pool, filled)
        print(f"filled {fmt_mb(filled.value_bytes)} MB in {filled.keys:,} keys ({filled.seconds:.1f}s total); "
              f"dataset {fmt_mb(dataset_bytes(base))} MB", flush=True)
        big = f"{filled.value_bytes / 1e9:.2f} GB"
        anchor = Series("anchor redis-cli --cluster backup")
        local = {c: Series(f"clusterbak local {c}") for c in ("zstd", "none")}
        jobs = [lambda: run_anchor(seed, workdir, anchor, 3),
                lambda: run_clusterbak(seed, inventory, workdir, local["zstd"], "zstd", extra),
                lambda: run_clusterbak(seed, inventory, workdir, local["none"], "none", extra)]
        for r in range(args.runs):
            for k in range(len(jobs)):
                jobs[(r + k) % len(jobs)]()
            print(f"round {r + 1}: anchor {anchor.runs[-1].wall:.2f}s, zstd {local['zstd'].runs[-1].wall:.2f}s, "
                  f"none {local['none'].runs[-1].wall:.2f}s", flush=True)
        rows += [(big, anchor, anchor), (big, local["zstd"], anchor), (big, local["none"], anchor)]

        if not args.no_ssh and args.ssh_runs > 0:
            sshd = start_sshd(workdir / "sshd")
            ssh_lab = replace(lab, sshd={"pid": sshd.pid, "port": sshd.port, "user": sshd.user,
                                         "key_file": str(sshd.key_file), "known_hosts": str(sshd.known_hosts)},
                              inventory=str(workdir / "inventory-ssh.toml"))
            ssh_inv = Path(ssh_lab.inventory)
            ssh_inv.write_text(render_inventory(ssh_lab))
            remote = {c: Series(f"clusterbak ssh {c}") for c in ("zstd", "none")}
            ssh_anchor = Series("anchor redis-cli --cluster backup")
            for r in range(args.ssh_runs):
                run_anchor(seed, workdir, ssh_anchor, 3)
                for c in (("zstd", "none") if r % 2 == 0 else ("none", "zstd")):
                    run_clusterbak(seed, str(ssh_inv), workdir, remote[c], c, extra)
                print(f"ssh round {r + 1}: anchor {ssh_anchor.runs[-1].wall:.2f}s, "
                      f"zstd {remote['zstd'].runs[-1].wall:.2f}s, none {remote['none'].runs[-1].wall:.2f}s",
                      flush=True)
            ssh_anchor.name = "anchor (again, during the ssh rounds)"
            rows += [
                (big, ssh_anchor, ssh_anchor),
                (big, remote["zstd"], ssh_anchor),
                (big, remote["none"], ssh_anchor),
            ]

        print()
        print(f"clusterbak backup vs redis-cli --cluster backup; 3 masters x 1 replica on 127.0.0.1, "
              f"{os.cpu_count()} CPUs, load average {load_at_start} at start, {os.getloadavg()[0]:.2f} at end; "
              f"~{BIG_VALUE // 1000} KB text values + small keys; clusterbak zstd level {ZSTD_LEVEL}, "
              f"{' '.join(extra) or '--parallel default'}; MB = 10^6 bytes")
        print()
        print("| data | what | runs (s) | median s | ratio vs anchor | peak RSS MB | RDB MB | stored MB "
              "| BGSAVE s (sum) | transfer s (sum) |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for size, s, a in rows:
            ratio = "1.00x" if s is a else f"{s.median / a.median:.2f}x"
            save = f"{statistics.median(s.save_s):.2f}" if s.save_s else "-"
            xfer = f"{statistics.median(s.transfer_s):.2f}" if s.transfer_s else "-"
            runs = " ".join(f"{r.wall:.2f}" for r in s.runs)
            print(f"| {size} | {s.name} | {runs} | {s.median:.2f} | {ratio} | {s.rss:.0f} | {fmt_mb(s.raw)} "
                  f"| {fmt_mb(s.stored)} | {save} | {xfer} |")
        cb = [s for _, s, a in rows if s is not a]
        rss_small, rss_big = s_zstd.rss, local["zstd"].rss  # like with like: local zstd at both sizes
        best = min(s.median / a.median for size, s, a in rows if size == big and s is not a and "zstd" in s.name)
        floor = min(statistics.median(s.save_s) for s in local.values()) / anchor.median
        print()
        print(f"single-host floor: clusterbak's BGSAVEs alone (serialized per host, sum {floor * anchor.median:.2f}s) "
              f"are {floor:.2f}x of the anchor's wall time, before any transfer or start-up")
        print(f"goal ratio <= {GOAL_RATIO}x (local zstd): {local['zstd'].median / anchor.median:.2f}x "
              f"({'met' if local['zstd'].median / anchor.median <= GOAL_RATIO else 'NOT met'}); best zstd {best:.2f}x")
        print(f"goal peak RSS < {GOAL_RSS_MB} MB and flat: local zstd {rss_small:.0f} MB at {small}, {rss_big:.0f} MB "
              f"at {big}; highest of all clusterbak runs {max(s.rss for s in cb):.0f} MB "
              f"({'met' if max(s.rss for s in cb) < GOAL_RSS_MB else 'NOT met'})")
        return 0
    finally:
        if sshd is not None:
            sshd.stop()
        if lab is not None:
            try:
                cluster.down(lab_dir)
            except Exception as exc:  # noqa: BLE001 - keep cleaning up
                print(f"lab down failed: {exc}", file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
