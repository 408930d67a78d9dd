"""SSH to a node's host with paramiko: exec channels for commands and for streaming files.

Files move over `exec` channels (a remote /bin/sh opens the file once, prints the size of the open handle,
then `head -c SIZE` of it), not SFTP: on loopback that is faster than paramiko's SFTP and has no request
pipelining to tune. Host keys are checked against known_hosts: an unknown key is refused unless
accept_new_host_keys, a changed key always. A connection that drops during fetch() is reopened and the file
restarted from byte 0 into a fresh sink. The remote side needs a POSIX sh and GNU/busybox coreutils.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import secrets
import select
import shlex
import threading
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO

import paramiko
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from clusterbak.errors import TransportError
from clusterbak.transports.base import CHUNK, ConnectionDropped, FileStat, OpenSink, RunResult, last_line, stream_into
from clusterbak.transports.paramiko_link import LINK_ERRORS, BatchingPipe, LinkSettings, open_client

WINDOW_SIZE = 4 * 1024 * 1024  # 4/8/16 MiB measured alike on loopback; 4 MiB keeps a channel's memory bounded
MAX_PACKET_SIZE = 32 * 1024  # OpenSSH's sshd sends ~32 KiB packets whatever larger size we allow
# Opens the file once; the size comes from the open handle (a file renamed over by a new save keeps its inode).
READ_SCRIPT = 'exec 3<"$1" && s=$(stat -L -c %s /dev/fd/3) && echo "$s" && exec head -c "$s" <&3'
STAT_SCRIPT = '[ -e "$1" ] || { echo missing; exit 0; }; exec stat -L -c "%s %Y %f" -- "$1"'
COMMIT_SCRIPT = (
    'n=$(stat -c %s -- "$1") || exit 1; '
    'if [ "$n" != "$3" ]; then rm -f -- "$1"; echo "temp file has $n of $3 bytes" >&2; exit 3; fi; '
    'r="$2"; [ -e "$r" ] || r=$(dirname -- "$2"); o=$(stat -c %u:%g -- "$r") && chown "$o" -- "$1" 2>/dev/null; '
    'sync -- "$1" 2>/dev/null || sync; chmod "$4" -- "$1" && mv -f -- "$1" "$2" || { rm -f -- "$1"; exit 1; }; '
    'sync -- "$(dirname -- "$2")" 2>/dev/null; exit 0'
)
# A new directory takes its parent's owner (a node running as `redis` must be able to write its AOF dir).
MKDIR_SCRIPT = ('[ -d "$1" ] && exit 0; mkdir -p -- "$1" || exit 1; '
                'o=$(stat -c %u:%g -- "$(dirname -- "$1")") && chown "$o" -- "$1" 2>/dev/null; exit 0')
RENAME_SCRIPT = '{ [ -e "$2" ] || [ -L "$2" ]; } && { echo "$2 exists" >&2; exit 3; }; exec mv -- "$1" "$2"'


def sh(script: str, *args: str) -> str:
    """A command line that runs `script` under /bin/sh with positional args, whatever the login shell is."""
    return " ".join(["sh -c", shlex.quote(script), "clusterbak", *(shlex.quote(a) for a in args)])


class SshTransport:
    """One host over SSH. Connects lazily, keeps one connection, reconnects after it broke.

    Values not given explicitly come from ~/.ssh/config (HostName, User, Port, IdentityFile) when it exists.
    """

    def __init__(
        self,
        host: str,
        *,
        port: int | None = None,
        user: str | None = None,
        key_file: str | os.PathLike[str] | None = None,
        known_hosts: str | os.PathLike[str] | None = None,
        accept_new_host_keys: bool = False,
        connect_timeout: float = 10.0,
        io_timeout: float = 30.0,
        ssh_config_path: str | None = "~/.ssh/config",
        attempts: int = 3,
        retry_wait: float = 0.5,
        retry_wait_max: float = 8.0,
        window_size: int = WINDOW_SIZE,
        max_packet_size: int = MAX_PACKET_SIZE,
        on_retry: Callable[[str, int, BaseException], None] | None = None,
    ) -> None:
        cfg: dict = {}
        config_file = os.path.expanduser(ssh_config_path) if ssh_config_path else None
        if config_file and os.path.isfile(config_file):
            try:
                cfg = paramiko.SSHConfig.from_path(config_file).lookup(host)
            except Exception as e:  # paramiko raises several types for a bad config
                raise TransportError(f"ssh {host}: cannot read {config_file}: {e}; fix or move that file") from None
        hostname = cfg.get("hostname", host)
        port = port if port is not None else int(cfg.get("port", 22))
        user = user or cfg.get("user") or getpass.getuser()
        where = f"ssh {user}@{hostname}:{port}"
        if key_file is not None:
            path = os.path.expanduser(os.fspath(key_file))
            if not os.path.isfile(path):
                raise TransportError(f"{where}: key file {path} does not exist; check --ssh-key")
            key_files: tuple[str, ...] = (path,)
        else:  # IdentityFile lines that name no file are skipped, as OpenSSH does
            key_files = tuple(p for p in map(os.path.expanduser, cfg.get("identityfile", [])) if os.path.isfile(p))
        self.link = LinkSettings(
            where=where,
            hostname=hostname,
            port=port,
            user=user,
            key_files=key_files,
            known_hosts=os.path.expanduser(os.fspath(known_hosts or "~/.ssh/known_hosts")),
            accept_new_host_keys=accept_new_host_keys,
            connect_timeout=connect_timeout,
            window_size=window_size,
            max_packet_size=max_packet_size,
        )
        self.io_timeout = io_timeout
        self.attempts = max(1, attempts)
        self.retry_wait = retry_wait
        self.retry_wait_max = retry_wait_max
        self.on_retry = on_retry
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.RLock()

    @property
    def where(self) -> str:
        return self.link.where

    @property
    def paramiko_transport(self) -> paramiko.Transport | None:
        """The live paramiko Transport, if connected (for diagnostics, and tests that cut the line)."""
        return self._client.get_transport() if self._client is not None else None

    def connect(self) -> paramiko.Transport:
        """The open connection, (re)connecting when there is none or it broke. Safe to share between threads."""
        with self._lock:
            t = self.paramiko_transport
            if t is None or not t.is_active():
                self.close()
                self._client = open_client(self.link)
                t = self._client.get_transport()
                assert t is not None
            return t

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _forget_if_dead(self) -> None:
        """After an error: drop a broken connection (the next call reconnects); keep a live one, whose other
        channels may be busy (a stalled channel is not a dead connection)."""
        if not self._alive():
            self.close()

    def __enter__(self) -> SshTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the Transport protocol ---------------------------------------------------------------------------

    def run(self, command: str, timeout: float = 60.0, check: bool = True) -> RunResult:
        chan = self._channel(command, timeout=None)
        out: list[bytes] = []
        err: list[bytes] = []
        deadline = time.monotonic() + timeout
        try:
            chan.shutdown_write()
            chan.fileno()  # makes the channel selectable: ready when stdout or stderr has data, or at EOF
            while True:
                if chan.recv_ready():
                    out.append(chan.recv(CHUNK))
                elif chan.recv_stderr_ready():
                    err.append(chan.recv_stderr(CHUNK))
                elif chan.eof_received or chan.closed:
                    break
                elif (left := deadline - time.monotonic()) <= 0:
                    raise TransportError(f"{self.where}: `{command}` did not finish within {timeout:g}s")
                else:
                    select.select([chan], [], [], min(left, 1.0))
            status = self._exit_status(chan, f"`{command}`")
        finally:
            chan.close()
        result = RunResult(command, status, _text(out), _text(err))
        if check and status != 0:
            raise TransportError(f"{self.where}: `{command}` exited {status}: {last_line(result.stderr)}")
        return result

    def read_chunks(self, path: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        """One attempt. A dropped connection raises ConnectionDropped (a TransportError); fetch() retries."""
        what = f"reading {path}"
        batch = max(64 * 1024, min(chunk_size, self.link.window_size // 4))
        chan = self._channel(sh(READ_SCRIPT, path), timeout=self.io_timeout, batch=batch)
        try:
            head, size = b"", -1
            while size < 0:  # the first line is the size of the open file
                data = self._recv(chan, chunk_size, what)
                if not data:
                    status = self._exit_status(chan, what)
                    raise TransportError(
                        f"{self.where}: cannot read {path}: {last_line(_drain_stderr(chan))} (exit {status}); "
                        f"check the path and that {self.link.user} may read it"
                    )
                line, newline, rest = (head + data).partition(b"\n")
                head, size = (rest, _size_line(line, self.where)) if newline else (line, -1)
            done = len(head)
            if head:
                yield head
            while done < size and (data := self._recv(chan, chunk_size, what)):
                done += len(data)
                yield data
            status = self._exit_status(chan, what)
            if done != size or status != 0:
                raise TransportError(
                    f"{self.where}: read of {path} ended after {done} of {size} bytes "
                    f"(exit {status}: {last_line(_drain_stderr(chan))}); take it again"
                )
        finally:
            chan.close()

    def fetch(self, path: str, open_sink: OpenSink, chunk_size: int = CHUNK) -> int:
        """Copy `path` into a fresh sink per attempt; a dropped connection reconnects and restarts at byte 0."""

        def before_sleep(state: RetryCallState) -> None:
            self._forget_if_dead()
            exc = state.outcome.exception() if state.outcome else None
            if self.on_retry is not None and exc is not None:
                self.on_retry(path, state.attempt_number, exc)

        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=self.retry_wait, max=self.retry_wait_max),
            retry=retry_if_exception_type(ConnectionDropped),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(lambda: stream_into(self.read_chunks(path, chunk_size), open_sink))
        except ConnectionDropped as e:
            raise ConnectionDropped(f"{e}; gave up on {path} after {self.attempts} attempts") from None

    def write_from(self, path: str, source: BinaryIO, mode: int = 0o640) -> int:
        """Stream into `PATH.clusterbak-tmp-XXXXXXXX`; then a second command checks its size, fsyncs it, sets
        the mode and `mv -f`s it into place. A dropped connection leaves at most that temp file, never `path`."""
        tmp = f"{path}.clusterbak-tmp-{secrets.token_hex(4)}"
        what = f"writing {tmp}"
        chan = self._channel(sh('umask 077 && exec cat > "$1"', tmp), timeout=self.io_timeout)
        written = 0
        try:
            while True:
                try:
                    chunk = source.read(CHUNK)
                except BaseException:  # the source failed: let `cat` finish, then remove its temp file
                    with contextlib.suppress(Exception):
                        chan.shutdown_write()
                        chan.status_event.wait(self.io_timeout)
                    self._discard(tmp)
                    raise
                if not chunk or not self._send(chan, chunk, what):
                    break
                written += len(chunk)
            chan.shutdown_write()
            status = self._exit_status(chan, what)
            if status != 0:
                raise TransportError(
                    f"{self.where}: cannot write {path}: {last_line(_drain_stderr(chan))}; "
                    f"check the directory exists and {self.link.user} may write there"
                )
        finally:
            chan.close()
        done = self.run(sh(COMMIT_SCRIPT, tmp, path, str(written), f"{mode & 0o7777:o}"), self.io_timeout, False)
        if done.exit_status != 0:
            raise TransportError(f"{self.where}: cannot move {tmp} into place as {path}: {last_line(done.stderr)}")
        return written

    def stat(self, path: str) -> FileStat | None:
        done = self.run(sh(STAT_SCRIPT, path), self.io_timeout, False)
        if done.exit_status != 0:
            raise TransportError(f"{self.where}: cannot stat {path}: {last_line(done.stderr)}")
        out = done.stdout.strip()
        if out == "missing":
            return None
        try:
            size, mtime, mode = out.split()
            return FileStat(path, int(size), float(mtime), int(mode, 16))
        except ValueError:
            raise TransportError(f"{self.where}: unexpected stat output for {path}: {out!r}") from None

    def makedirs(self, path: str) -> None:
        self.run(sh(MKDIR_SCRIPT, path), timeout=self.io_timeout)

    def rename(self, src: str, dst: str) -> None:
        """`mv src dst`; refuses when dst exists (a rename moves aside, it never deletes)."""
        done = self.run(sh(RENAME_SCRIPT, src, dst), self.io_timeout, False)
        if done.exit_status != 0:
            raise TransportError(f"{self.where}: cannot rename {src} to {dst}: {last_line(done.stderr)}")

    # -- channels -----------------------------------------------------------------------------------------

    def _channel(self, command: str, timeout: float | None, batch: int = 0) -> paramiko.Channel:
        t = self.connect()
        try:
            chan = t.open_session(timeout=self.link.connect_timeout)
            if batch:
                chan.in_buffer = BatchingPipe(batch)  # before exec: no data has arrived yet
            chan.settimeout(timeout)
            chan.exec_command(command)
        except LINK_ERRORS as e:
            self._forget_if_dead()
            raise ConnectionDropped(f"{self.where}: cannot start `{command}`: {e or type(e).__name__}") from None
        return chan

    def _send(self, chan: paramiko.Channel, data: bytes, what: str) -> bool:
        """False when the remote command already ended (its exit status tells why), else True."""
        try:
            chan.sendall(data)
            return True
        except TimeoutError:
            self._forget_if_dead()
            raise ConnectionDropped(f"{self.where}: {what} stalled for {self.io_timeout:g}s") from None
        except LINK_ERRORS as e:
            if chan.exit_status_ready() and self._alive():
                return False
            self._forget_if_dead()
            raise ConnectionDropped(f"{self.where}: connection lost while {what}: {e or type(e).__name__}") from None

    def _discard(self, tmp: str) -> None:
        try:
            self.run(sh('rm -f -- "$1"', tmp), timeout=self.io_timeout, check=False)
        except TransportError:
            pass  # the connection is gone too: the temp file stays, under its tell-tale name

    def _recv(self, chan: paramiko.Channel, n: int, what: str) -> bytes:
        try:
            data = chan.recv(n)
        except TimeoutError:
            self._forget_if_dead()
            raise ConnectionDropped(f"{self.where}: no data for {self.io_timeout:g}s while {what}") from None
        except LINK_ERRORS as e:
            self._forget_if_dead()
            raise ConnectionDropped(f"{self.where}: connection lost while {what}: {e or type(e).__name__}") from None
        if not data and not self._alive():
            self._forget_if_dead()
            raise ConnectionDropped(f"{self.where}: connection lost while {what}")
        return data

    def _exit_status(self, chan: paramiko.Channel, what: str) -> int:
        arrived = chan.status_event.wait(self.io_timeout)
        if arrived and chan.exit_status != -1:
            return chan.exit_status
        if not self._alive():  # paramiko sets the event with status -1 when the connection closes
            self._forget_if_dead()
            raise ConnectionDropped(f"{self.where}: connection lost during {what}")
        if not arrived:
            raise TransportError(f"{self.where}: no exit status for {what} within {self.io_timeout:g}s")
        raise TransportError(f"{self.where}: {what} ended without an exit status (killed by a signal?)")

    def _alive(self) -> bool:
        t = self.paramiko_transport
        return t is not None and t.is_active()


def _size_line(line: bytes, where: str) -> int:
    if not line.isdigit():
        raise TransportError(
            f"{where}: expected the file size, got {line[:60]!r}; "
            f"does the remote login shell print something for non-interactive commands (~/.bashrc)?"
        )
    return int(line)


def _drain_stderr(chan: paramiko.Channel) -> str:
    parts = []
    while chan.recv_stderr_ready():
        parts.append(chan.recv_stderr(65536))
    return b"".join(parts).decode(errors="replace")


def _text(parts: list[bytes]) -> str:
    return b"".join(parts).decode(errors="replace")
