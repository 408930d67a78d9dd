"""Side by side: SshTransport.fetch vs OpenSSH `ssh ... cat FILE > /dev/null`, same file, same loopback sshd.

Run standalone:  PYTHONPATH=. /tmp/v/bin/python benchmarks/ssh_transfer.py [--size-mb 500] [--runs 3]
Starts its own throwaway sshd (clusterbak.lab.sshd), alternates the two clients run by run, prints MB/s
(1 MB = 10^6 bytes) with median and best, and the ratio of the medians; removes everything it made.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clusterbak.lab.sshd import start_sshd  # noqa: E402
from clusterbak.transports.ssh import MAX_PACKET_SIZE, WINDOW_SIZE, SshTransport  # noqa: E402

CIPHER = "aes128-gcm@openssh.com"


class NullSink:
    def write(self, chunk: bytes) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


class HashSink(NullSink):
    """What a backup does at the least: hash every byte as it streams."""

    def __init__(self) -> None:
        self.h = hashlib.sha256()

    def write(self, chunk: bytes) -> None:
        self.h.update(chunk)


def make_file(path: Path, size: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n
            block = block[1:] + block[:1]  # not one repeated MiB, in case anything compresses


def time_paramiko(t: SshTransport, path: Path, chunk: int, sink: type[NullSink] = NullSink) -> float:
    start = time.perf_counter()
    n = t.fetch(str(path), sink, chunk)
    elapsed = time.perf_counter() - start
    assert n == path.stat().st_size, (n, path.stat().st_size)
    return n / elapsed / 1e6


def time_openssh(lab, path: Path) -> float:  # type: ignore[no-untyped-def]
    argv = [
        "ssh", "-c", CIPHER, "-p", str(lab.port), "-i", str(lab.key_file),
        "-o", f"UserKnownHostsFile={lab.known_hosts}", "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes", f"{lab.user}@{lab.host}", "cat", str(path),
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return path.stat().st_size / (time.perf_counter() - start) / 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=500)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--window", type=int, default=WINDOW_SIZE, help="channel window, bytes")
    ap.add_argument("--packet", type=int, default=MAX_PACKET_SIZE, help="max packet we advertise, bytes")
    ap.add_argument("--chunk", type=int, default=1 << 20, help="fetch chunk size, bytes")
    args = ap.parse_args()
    if shutil.which("ssh") is None:
        print("ssh (OpenSSH client) not found: apt-get install openssh-client", file=sys.stderr)
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="clusterbak-bench-"))
    lab = None
    try:
        data = workdir / "payload.bin"
        make_file(data, args.size_mb * 1_000_000)
        lab = start_sshd(workdir / "sshd")
        t = SshTransport(
            lab.host, port=lab.port, user=lab.user, key_file=lab.key_file, known_hosts=lab.known_hosts,
            window_size=args.window, max_packet_size=args.packet, ssh_config_path=None,
        )  # fmt: skip
        with t:
            cipher = t.connect().remote_cipher
            time_paramiko(t, data, args.chunk)  # warm the page cache and both code paths
            time_openssh(lab, data)
            ours: list[float] = []
            hashed: list[float] = []
            theirs: list[float] = []
            for _ in range(args.runs):
                ours.append(time_paramiko(t, data, args.chunk))
                theirs.append(time_openssh(lab, data))
                hashed.append(time_paramiko(t, data, args.chunk, HashSink))
        print(f"{args.size_mb} MB over loopback, {args.runs} runs each, window {args.window >> 10} KiB, "
              f"packet {args.packet >> 10} KiB, chunk {args.chunk >> 10} KiB, cipher {cipher} / {CIPHER}")  # fmt: skip
        print(f"{'client':<28}{'median MB/s':>12}{'best MB/s':>11}   runs")
        rows = (
            ("SshTransport.fetch", ours),
            ("ssh cat > /dev/null", theirs),
            ("SshTransport.fetch + sha256", hashed),
        )
        for name, rates in rows:
            runs = " ".join(f"{r:.0f}" for r in rates)
            print(f"{name:<28}{statistics.median(rates):>12.0f}{max(rates):>11.0f}   {runs}")
        ratio = statistics.median(ours) / statistics.median(theirs)
        print(f"ratio SshTransport.fetch / ssh cat (medians): {ratio:.2f}x")
        return 0
    finally:
        if lab is not None:
            lab.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
