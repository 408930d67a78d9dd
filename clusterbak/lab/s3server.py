"""A real S3-protocol server for the lab, the tests and the benchmarks: s3s-fs over a directory, on a free loopback
port, with its own access key and secret (SigV4 is checked). Built and cached by scripts/build-s3s-fs.sh.

    python -m clusterbak.lab.s3server start DIR [--bucket NAME]   # prints `export ...` lines, runs in background
    python -m clusterbak.lab.s3server stop DIR
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from clusterbak.errors import PreconditionError, StepFailed
from clusterbak.lab.procs import free_base_port, pid_alive, port_free, read_pid

DEFAULT_BIN = Path.home() / ".cache" / "clusterbak" / "s3s-fs" / "bin" / "s3s-fs"
START_TIMEOUT = 20.0


@dataclass(frozen=True, slots=True)
class S3Server:
    root: Path  # the server's data directory: a bucket is a directory in it
    port: int
    pid: int
    access_key: str
    secret_key: str

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The AWS chain's variables pointing at this server (what an operator would export)."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true"}

    def make_bucket(self, name: str) -> None:
        (self.root / name).mkdir(mode=0o700, exist_ok=True)  # s3s-fs: a bucket is a directory under its root


def binary() -> str:
    path = os.environ.get("CLUSTERBAK_S3S_FS") or str(DEFAULT_BIN)
    if not os.access(path, os.X_OK):
        raise PreconditionError(f"s3s-fs not found at {path}: build it with scripts/build-s3s-fs.sh "
                                "(scripts/test.sh does this)")
    return path


def start(state_dir: Path, port: int | None = None) -> S3Server:
    """Start s3s-fs over state_dir/data; wait (bounded) until it accepts connections. The pid goes to state_dir."""
    state_dir.mkdir(parents=True, exist_ok=True)
    data = state_dir / "data"
    data.mkdir(exist_ok=True, mode=0o700)
    access, secret = "clusterbak" + secrets.token_hex(4), secrets.token_hex(20)
    port = port or free_base_port(1)
    log = open(state_dir / "s3s-fs.log", "ab")
    proc = subprocess.Popen([binary(), "--host", "127.0.0.1", "--port", str(port), "--access-key", access,
                             "--secret-key", secret, str(data)], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    log.close()
    (state_dir / "s3s-fs.pid").write_text(f"{proc.pid}\n")
    (state_dir / "s3s-fs.env").write_text("".join(f"export {k}={v}\n" for k, v in
                                                  S3Server(data, port, proc.pid, access, secret).env().items()))
    deadline = time.monotonic() + START_TIMEOUT
    while port_free(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(state_dir)
            raise StepFailed(f"s3s-fs did not start on 127.0.0.1:{port}; see {state_dir / 's3s-fs.log'}")
        time.sleep(0.05)
    return S3Server(data, port, proc.pid, access, secret)


def moto_binary() -> str:
    """moto's standalone S3 server (`pip install 'moto[server]'`, scripts/setup.sh): it implements Object Lock,
    which s3s-fs does not. It checks no signatures: the Object Lock tests only."""
    beside = Path(sys.executable).parent / "moto_server"
    found = str(beside) if os.access(beside, os.X_OK) else shutil.which("moto_server")
    if not found:
        raise PreconditionError("moto_server not found: pip install 'moto[server]' (scripts/setup.sh does this)")
    return found


def start_moto(state_dir: Path, port: int | None = None) -> S3Server:
    """moto_server on a free loopback port; its pid goes to state_dir/moto.pid (stop it with stop(state_dir,
    name="moto"))."""
    state_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_base_port(1)
    log = open(state_dir / "moto.log", "ab")
    proc = subprocess.Popen([moto_binary(), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    (state_dir / "moto.pid").write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + START_TIMEOUT
    while port_free(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(state_dir, name="moto")
            raise StepFailed(f"moto_server did not start on 127.0.0.1:{port}; see {state_dir / 'moto.log'}")
        time.sleep(0.05)
    return S3Server(state_dir, port, proc.pid, "moto" + secrets.token_hex(4), secrets.token_hex(20))


def stop(state_dir: Path, timeout: float = 10.0, name: str = "s3s-fs") -> None:
    """Stop the server started in state_dir, by its pid (TERM, then KILL after `timeout`)."""
    pid = read_pid(state_dir / f"{name}.pid")
    if pid is None or not pid_alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        _reap(pid)
        time.sleep(0.05)
    if pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    _reap(pid)
    (state_dir / f"{name}.pid").unlink(missing_ok=True)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("start", "stop"):
        print(__doc__, file=sys.stderr)
        return 2
    state = Path(argv[1]).absolute()
    if argv[0] == "stop":
        stop(state)
        return 0
    server = start(state)
    if "--bucket" in argv:
        server.make_bucket(argv[argv.index("--bucket") + 1])
    print(f"# s3s-fs pid {server.pid} on {server.endpoint}, data in {server.root}")
    print((state / "s3s-fs.env").read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
