"""Side by side, one run: backup to S3 vs to a local directory, the repository's upload vs boto3's upload_file, and
what --encrypt-to costs. Random (incompressible) values; a real s3s-fs server and a real 3x1 lab on loopback.

    .venv/bin/python benchmarks/s3_backup.py [--mb 256] [--file-mb 256] [--runs 3]

1. fills a 3x1 lab with --mb of random 100 KB values (pipelined per node), waits for the replicas;
2. backs it up --runs times each, alternated: to a local dir, to s3://bench/..., to a local dir with --encrypt-to,
   to S3 with --encrypt-to (every backup a CLI subprocess: wall seconds and peak RSS from /usr/bin/time);
3. uploads one --file-mb random file through S3Repository (open_sink, 1 MiB writes, no compression) and with
   boto3's client.upload_file (default TransferConfig; once with boto3's default client, once with the client
   config the repository uses) to the same server, order rotated, --runs times;
4. prints one table with medians and the ratios against the goals (S3/local <= 1.2x, repository/upload_file
   >= 0.9x, encrypted/plain <= 1.1x). Everything it starts is stopped by pid on the way out. MB = 10^6 bytes.
"""

from __future__ import annotations

import argparse
import binascii
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
import redis  # noqa: E402

from clusterbak.lab import cluster, s3server  # noqa: E402
from clusterbak.lab.inventory import write_inventory  # noqa: E402
from clusterbak.lab.procs import free_base_port  # noqa: E402
from clusterbak.storage.keys import generate  # noqa: E402
from clusterbak.storage.s3 import S3Options, S3Repository  # noqa: E402

VALUE = 100_000
BUCKET = "bench"
TIME_BIN = "/usr/bin/time"


def fill(lab, mb: int) -> None:
    masters = [n for n in lab.nodes if n.role == "master"]
    per = mb * 1_000_000 // VALUE // len(masters)
    for n in masters:
        client = redis.Redis(port=n.port)
        pipe = client.pipeline(transaction=False)
        made = i = 0
        while made < per:  # only keys this master owns: MOVED would reject the others
            key = f"bench:{n.port}:{i}"
            i += 1
            if binascii.crc_hqx(key.encode(), 0) & 0x3FFF not in owned(client):
                continue
            pipe.set(key, os.urandom(VALUE))
            made += 1
            if made % 50 == 0:
                pipe.execute()
        pipe.execute()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        offsets = [(redis.Redis(port=n.port).info("replication")) for n in lab.nodes]
        masters_off = {o.get("master_repl_offset") for o in offsets if o["role"] == "master"}
        lagging = [o for o in offsets if o["role"] == "slave" and o.get("slave_repl_offset") not in masters_off]
        if not lagging:
            return
        time.sleep(0.5)


_OWNED: dict[int, set[int]] = {}


def owned(client) -> set[int]:
    port = client.connection_pool.connection_kwargs["port"]
    if port not in _OWNED:
        myid = client.execute_command("CLUSTER", "MYID")
        myid = myid.decode() if isinstance(myid, bytes) else myid
        slots = set()
        for start, end, *nodes in client.execute_command("CLUSTER", "SLOTS"):
            node_id = nodes[0][2].decode() if isinstance(nodes[0][2], bytes) else nodes[0][2]
            if node_id == myid:
                slots.update(range(start, end + 1))
        _OWNED[port] = slots
    return _OWNED[port]


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) a running process has used so far (Linux /proc); nan elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(cmd: list[str], env: dict, server_pid: int) -> tuple[float, float, float, float]:
    """(wall seconds, peak RSS MB, CPU seconds of the command, CPU seconds of the S3 server meanwhile) of one
    command; raises if it fails. CPU time says where the work went even when other work on the machine makes the
    wall times of single runs vary."""
    before = cpu_of(server_pid)
    if os.path.exists(TIME_BIN):
        with tempfile.NamedTemporaryFile("r") as out:
            subprocess.run([TIME_BIN, "-f", "%e %M %U %S", "-o", out.name, *cmd], env=env, check=True,
                           stdout=subprocess.DEVNULL)
            wall, rss, user, system = out.read().split()[-4:]
            return float(wall), int(rss) / 1024, float(user) + float(system), cpu_of(server_pid) - before
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0, float("nan"), float("nan"), cpu_of(server_pid) - before


def compile_checkout() -> None:
    """The checkout's bytecode, compiled once as an installed package's is: with PYTHONDONTWRITEBYTECODE set (some CI
    and sandbox shells) every backup subprocess would otherwise compile clusterbak from source again."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", "clusterbak"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)


def repo_upload(repo: S3Repository, blob: Path, i: int) -> None:
    sink = repo.begin(f"20260101T000000Z-{i:04d}").open_sink("blob.bin", "none")
    with open(blob, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sink.write(chunk)
    sink.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--file-mb", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--part-mb", type=int, default=5, help="--s3-part-size-mb for the S3 cases")
    ap.add_argument("--concurrency", type=int, default=2, help="--s3-concurrency for the S3 cases")
    args = ap.parse_args()
    compile_checkout()
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="clusterbak-s3bench-"))
    server = s3server.start(work / "s3")
    server.make_bucket(BUCKET)
    lab = None
    try:
        lab = cluster.up(work / "lab", 3, 1, free_base_port(6))
        write_inventory(lab)
        print(f"filling the lab with {args.mb} MB of random values ...", file=sys.stderr)
        fill(lab, args.mb)
        keys = generate(str(work / "keys"))
        env = {**os.environ, **server.env()}
        cb = [str(ROOT / ".venv" / "bin" / "clusterbak")]
        if not os.path.exists(cb[0]):
            cb = [sys.executable, "-m", "clusterbak"]
        base = [*cb, "backup", "--seed", lab.seed, "--inventory", lab.inventory, "--source", "replica"]
        s3args = ["--s3-part-size-mb", str(args.part_mb), "--s3-concurrency", str(args.concurrency)]
        cases = {
            "local": lambda i: [*base, "--dest", str(work / f"local-{i}")],
            "s3": lambda i: [*base, "--dest", f"s3://{BUCKET}/plain-{i}", *s3args],
            "local+age": lambda i: [*base, "--dest", str(work / f"enc-{i}"), "--encrypt-to", keys["recipient"]],
            "s3+age": lambda i: [*base, "--dest", f"s3://{BUCKET}/enc-{i}", "--encrypt-to", keys["recipient"],
                                *s3args],
        }
        results: dict[str, list[tuple[float, float, float, float]]] = {k: [] for k in cases}
        for i in range(args.runs):
            order = list(cases)[i % len(cases):] + list(cases)[: i % len(cases)]
            for name in order:
                results[name].append(timed(cases[name](i), env, server.pid))
                print(f"  {name:10} run {i}: {results[name][-1][0]:.2f} s", file=sys.stderr)
                for leftover in work.glob("local-*"):  # keep the disk small between runs
                    shutil.rmtree(leftover, ignore_errors=True)
                for leftover in work.glob("enc-*"):
                    shutil.rmtree(leftover, ignore_errors=True)

        # the repository layer vs boto3's upload_file, same file, same server
        blob = work / "blob.bin"
        with open(blob, "wb") as fh:
            for _ in range(args.file_mb):
                fh.write(os.urandom(1_000_000))
        os.environ.update(server.env())
        client = boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=server.access_key,
                              aws_secret_access_key=server.secret_key, region_name="us-east-1")
        repo = S3Repository(BUCKET, "upload", S3Options(endpoint_url=server.endpoint, part_size=args.part_mb << 20,
                                                        concurrency=args.concurrency))
        uploaders = {  # boto3's defaults; boto3 with the client config the repository uses; the repository
            "upload_file": lambda i: client.upload_file(str(blob), BUCKET, f"upload/boto3-{i}.bin"),
            "upload_file, same client config": lambda i: repo.client.upload_file(str(blob), BUCKET,
                                                                                 f"upload/same-{i}.bin"),
            "repository": lambda i: repo_upload(repo, blob, i),
        }
        uploads: dict[str, list[tuple[float, float, float]]] = {name: [] for name in uploaders}
        for i in range(args.runs):
            names = list(uploaders)
            for name in names[i % 3:] + names[: i % 3]:
                t0, c0, s0 = time.perf_counter(), time.process_time(), cpu_of(server.pid)
                uploaders[name](i)
                uploads[name].append((time.perf_counter() - t0, time.process_time() - c0, cpu_of(server.pid) - s0))
        size = blob.stat().st_size

        def med(name: str, column: int = 0) -> float:
            return statistics.median(r[column] for r in results[name])

        def rss(name: str) -> float:
            return max(r[1] for r in results[name])

        def cpu(name: str) -> str:  # the backup process's CPU seconds, + the S3 server's
            return f"{med(name, 2):.2f}" + (f" + {med(name, 3):.2f}" if name.startswith("s3") else "")

        load = f"load average {load_before[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (2 cores here)"
        print(f"\n### backup of a 3x1 lab, {args.mb} MB of random values, median of {args.runs} runs; {load}\n")
        print("| case | wall s | peak RSS MB | ratio | goal | CPU s (+ S3 server) |")
        print("|---|---|---|---|---|---|")
        print(f"| local dir | {med('local'):.2f} | {rss('local'):.0f} | 1.00 | | {cpu('local')} |")
        print(f"| s3 (s3s-fs) | {med('s3'):.2f} | {rss('s3'):.0f} | {med('s3') / med('local'):.2f} vs local | <= 1.2 "
              f"| {cpu('s3')} |")
        print(f"| local + age | {med('local+age'):.2f} | {rss('local+age'):.0f} | "
              f"{med('local+age') / med('local'):.2f} vs local | <= 1.1 | {cpu('local+age')} |")
        print(f"| s3 + age | {med('s3+age'):.2f} | {rss('s3+age'):.0f} | {med('s3+age') / med('s3'):.2f} vs s3 | "
              f"<= 1.1 | {cpu('s3+age')} |")
        up = statistics.median(t for t, _, _ in uploads["upload_file"])
        print(f"\n### upload of one {size / 1e6:.0f} MB random file to the same s3s-fs, median of {args.runs}; "
              f"load average {os.getloadavg()[0]:.1f}\n")
        print("| uploader | MB/s | vs upload_file | goal | CPU s (+ S3 server) |")
        print("|---|---|---|---|---|")
        for name, runs in uploads.items():
            t = statistics.median(r[0] for r in runs)
            label = (f"S3Repository sink ({args.part_mb} MiB parts, {args.concurrency} in flight)"
                     if name == "repository" else f"boto3 {name}")
            print(f"| {label} | {size / t / 1e6:.0f} | {up / t:.2f} | {'>= 0.9' if name == 'repository' else ''} | "
                  f"{statistics.median(r[1] for r in runs):.2f} + {statistics.median(r[2] for r in runs):.2f} |")
        return 0
    finally:
        if lab is not None:
            cluster.down(Path(lab.dir))
        s3server.stop(work / "s3")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
