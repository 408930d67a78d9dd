"""A throwaway OpenSSH server on loopback, for integration tests, benchmarks and demos.

start_sshd() makes its own host key, user key, authorized_keys, known_hosts and sshd_config inside `workdir`,
starts /usr/sbin/sshd there (it daemonizes; we read its pid from the PidFile) and waits until the port answers.
SshdLab.stop() kills exactly that pid. Nothing outside `workdir` is touched except /run/sshd (created when root,
because sshd refuses to start without its privilege-separation directory).
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from clusterbak.errors import PreconditionError

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd")
START_TIMEOUT = 10.0


class LabError(PreconditionError):
    """The lab sshd could not be found or started."""


@dataclass(frozen=True, slots=True)
class SshdLab:
    pid: int
    port: int
    user: str
    key_file: Path
    known_hosts: Path
    host_public_key: str  # "ssh-ed25519 AAAA..." (no host, no comment)
    workdir: Path
    log_file: Path
    host: str = "127.0.0.1"

    @property
    def known_hosts_line(self) -> str:
        return f"[{self.host}]:{self.port} {self.host_public_key}"

    def stop(self, timeout: float = 5.0) -> None:
        """Kill exactly this sshd (its pid) and wait until it is gone. Idempotent."""
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _alive(self.pid):
                return
            time.sleep(0.02)
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        while _alive(self.pid):
            time.sleep(0.02)


def find_sshd() -> str:
    """The absolute path of the OpenSSH server (sshd must be run by absolute path to re-exec)."""
    for candidate in (*SSHD_CANDIDATES, shutil.which("sshd")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return os.path.abspath(candidate)
    raise LabError("sshd not found in /usr/sbin or PATH: install it with `apt-get install openssh-server`")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def start_sshd(workdir: Path, port: int | None = None, *, host: str = "127.0.0.1") -> SshdLab:
    """Start a throwaway sshd on `host`:`port` (a free port when None) with keys and config in `workdir`."""
    sshd = find_sshd()
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        raise LabError("ssh-keygen not found: install it with `apt-get install openssh-client`")
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port(host)
    user = getpass.getuser()

    host_key = workdir / "ssh_host_ed25519_key"
    user_key = workdir / "id_ed25519"
    for key, comment in ((host_key, "clusterbak-lab-host"), (user_key, "clusterbak-lab-user")):
        if not key.exists():
            _check_run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)])
    host_public_key = " ".join(host_key.with_suffix(".pub").read_text().split()[:2])
    authorized_keys = workdir / "authorized_keys"
    authorized_keys.write_text(user_key.with_suffix(".pub").read_text())
    authorized_keys.chmod(0o600)
    known_hosts = workdir / "known_hosts"
    known_hosts.write_text(f"[{host}]:{port} {host_public_key}\n")

    pid_file = workdir / "sshd.pid"
    log_file = workdir / "sshd.log"
    pid_file.unlink(missing_ok=True)
    config = workdir / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"ListenAddress {host}",
                f"Port {port}",
                f"HostKey {host_key}",
                f"PidFile {pid_file}",
                f"AuthorizedKeysFile {authorized_keys}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "PermitRootLogin prohibit-password",
                "Subsystem sftp internal-sftp",
                "LogLevel ERROR",
                "",
            ]
        )
    )
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    _check_run([sshd, "-t", "-f", str(config)])  # config test: a clear error instead of a silent exit
    # sshd forks into the background; the parent exits at once and the daemon writes the PidFile.
    _check_run([sshd, "-f", str(config), "-E", str(log_file)])
    pid = _wait_for_pid(pid_file, log_file)
    lab = SshdLab(pid, port, user, user_key, known_hosts, host_public_key, workdir, log_file, host)
    try:
        _wait_for_port(host, port, pid, log_file)
    except BaseException:
        lab.stop()
        raise
    return lab


def _check_run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise LabError(f"{argv[0]} exited {proc.returncode}: {last}")


def _wait_for_pid(pid_file: Path, log_file: Path) -> int:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            text = pid_file.read_text().strip()
        except FileNotFoundError:
            text = ""
        if text.isdigit():
            return int(text)
        time.sleep(0.02)
    raise LabError(f"sshd wrote no pid to {pid_file} within {START_TIMEOUT:.0f}s: {_log_tail(log_file)}")


def _wait_for_port(host: str, port: int, pid: int, log_file: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if not _alive(pid):
            raise LabError(f"sshd (pid {pid}) exited: {_log_tail(log_file)}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise LabError(f"sshd (pid {pid}) does not accept connections on {host}:{port}: {_log_tail(log_file)}")


def _alive(pid: int) -> bool:
    try:
        # Reap it if it is our child (it is not: sshd daemonizes), then probe.
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except (FileNotFoundError, IndexError):
        return True  # no /proc: kill(0) said it exists


def _log_tail(log_file: Path) -> str:
    try:
        lines = log_file.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "no log"
    return lines[-1] if lines else "empty log"
