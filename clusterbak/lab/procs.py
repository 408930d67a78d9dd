"""Start, stop and wait for one lab redis-server; bounded waits everywhere."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

from clusterbak.errors import PreconditionError, StepFailed


def find_binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else None)
    if not path:
        raise PreconditionError(
            f"{name} not found on PATH; install it with: sudo apt-get install -y redis-server redis-tools"
        )
    return path


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_base_port(count: int, start: int = 10000, stop: int = 40000) -> int:
    """A base port such that base..base+count-1 and their bus ports (+10000) are all free, all of them below the
    kernel's ephemeral range: a port in that range can be taken by any outgoing connection's source port between
    our check and redis-server's bind (seen in CI as "Address already in use")."""
    import random

    stop = min(stop, _ephemeral_low() - 10000)
    rng = random.SystemRandom()  # never the same sequence twice: callers in one second get different ports
    for _ in range(200):
        base = rng.randrange(start, stop - count)
        if all(port_free(p) and port_free(p + 10000) for p in range(base, base + count)):
            return base
    raise PreconditionError(f"no {count} consecutive free ports found between {start} and {stop}")


def _ephemeral_low(default: int = 32768) -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def child_pids(pid: int) -> list[int]:
    """Live children of pid (a redis-server's BGSAVE / rewrite child), from /proc."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry))
    return out


def kill_child_when_forked(pid: int, timeout: float = 30.0, sig: int = signal.SIGKILL) -> threading.Thread:
    """A thread that waits for pid's first child (a fork for BGSAVE or BGREWRITEAOF) and kills it: the save or
    rewrite then fails with status err, while the server itself stays healthy. For fault tests."""

    def run() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for child in child_pids(pid):
                try:
                    os.kill(child, sig)
                except ProcessLookupError:
                    continue
                return
            time.sleep(0.02)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def is_our_redis(pid: int, conf: Path) -> bool:
    """True when pid is a redis-server started from this conf file (guards against pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return False
    return "redis" in exe and (str(conf) in cmdline or "redis-server" in cmdline)


def wait_port(port: int, timeout: float, host: str = "127.0.0.1", tls: bool = False) -> bool:
    """True once the server answers PING (a password-protected one answers NOAUTH: up too). With tls, the lab's
    own readiness probe speaks TLS without checking the certificate: it only asks "is it up", sends no secret."""
    deadline = time.monotonic() + timeout
    context = None
    if tls:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5) as raw:
                s = context.wrap_socket(raw) if context else raw
                s.sendall(b"PING\r\n")
                s.settimeout(1.0)
                if s.recv(64).startswith((b"+PONG", b"-LOADING", b"-NOAUTH")):
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def _is_tls(conf: Path) -> bool:
    try:
        return any(line.startswith("tls-port ") for line in conf.read_text().splitlines())
    except OSError:
        return False


def start_server(conf: Path, port: int, timeout: float = 15.0) -> int:
    """Start a daemonizing redis-server from conf; return its pid once it answers PING. A failure or an interrupt
    (Ctrl-C, SIGTERM) after the server daemonized stops that server before it propagates: the caller has no pid
    to stop yet, so nobody else could."""
    pidfile = conf.parent / "redis.pid"
    pidfile.unlink(missing_ok=True)  # only a pidfile this start writes names our server
    try:
        result = subprocess.run([find_binary("redis-server"), str(conf)], capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise StepFailed(f"redis-server {conf} failed: {result.stderr.strip() or result.stdout.strip()}")
        if not wait_port(port, timeout, tls=_is_tls(conf)):
            log = conf.parent / "redis.log"
            raise StepFailed(f"redis-server on 127.0.0.1:{port} did not answer PING within {timeout:.0f}s; see {log}")
        pid = read_pid(pidfile)
        if pid is None:
            raise StepFailed(f"redis-server on port {port} wrote no pidfile in {conf.parent}")
        return pid
    except BaseException:
        _stop_half_started(pidfile)
        raise


def _stop_half_started(pidfile: Path) -> None:
    """The server a failed or interrupted start_server may have left: its pidfile appears right after it forks."""
    deadline = time.monotonic() + 2.0
    pid = read_pid(pidfile)
    while pid is None and time.monotonic() < deadline:
        time.sleep(0.02)
        pid = read_pid(pidfile)
    if pid is not None:
        try:
            stop_pid(pid)
        except StepFailed:
            pass  # the original error is what the caller needs to see


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL: the pid is gone when this returns."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        if not pid_alive(pid):
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.05)
    if pid_alive(pid):
        raise StepFailed(f"process {pid} did not exit after SIGKILL")


def start_standalone(workdir: Path, port: int, extra: str = "", timeout: float = 15.0) -> int:
    """A non-cluster redis-server in workdir (dir, pidfile and log there, no save points); returns its pid."""
    conf = workdir / "redis.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\ndaemonize yes\npidfile {workdir}/redis.pid\n"
                    f"logfile {workdir}/redis.log\ndir {workdir}\nsave \"\"\n{extra}")
    return start_server(conf, port, timeout)
