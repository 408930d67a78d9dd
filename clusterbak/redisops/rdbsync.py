"""A replica's snapshot streamed to us over the replication protocol (`backup --via sync`): no SSH, no second read
of the file, and the snapshot's exact replication offset from the node itself.

We connect as a sub-replica would: AUTH, `REPLCONF rdb-only 1` (7.0+: the node keeps no replication buffer for us
and ends the link after the RDB; older servers answer an error, which is fine: we hang up after the RDB), then
`PSYNC ? -1`. The node forks a disk BGSAVE of its own for us (we never announce `capa eof`, so no diskless delay),
answers `+FULLRESYNC <replid> <offset>` when the fork is made (the snapshot holds every write up to that offset),
then `$<length>` and the file. Newlines before either are its keep-alives while the save runs.

Everything the node sends is untrusted: lines are bounded, every field is checked, the length is capped, and the
bytes go through the same in-stream RDB verifier as a file fetched over SSH. A replica refuses the sync unless its
own link to its master is up (NOMASTERLINK): that refusal names the node.
"""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import redis

from clusterbak.errors import AccessRefused, RunCancelled, StepFailed
from clusterbak.redisops.connect import ConnectionOptions, describe_redis_error

MAX_LINE = 512  # +FULLRESYNC <40 hex> <offset> is ~70 bytes; an error line is short: anything longer is not Redis
MAX_SNAPSHOT = 1 << 42  # 4 TiB: a length beyond any real node's dataset is a hostile or broken reply
CHUNK = 1024 * 1024
_FULLRESYNC = re.compile(rb"\+FULLRESYNC ([0-9a-f]{40}) (\d{1,19})")
_BULK = re.compile(rb"\$(\d{1,19})")


class ProtocolError(StepFailed):
    """The node answered something the replication protocol does not allow here."""


@dataclass(frozen=True, slots=True)
class FullResync:
    replid: str
    offset: int


def parse_fullresync(address: str, line: bytes) -> FullResync:
    """`+FULLRESYNC <replid> <offset>`: the snapshot holds the node's stream up to `offset` of history `replid`."""
    m = _FULLRESYNC.fullmatch(line)
    if m is None:
        raise ProtocolError(f"{address}: unexpected answer to PSYNC: {_shown(line)}")
    return FullResync(m.group(1).decode(), int(m.group(2)))


def parse_bulk_length(address: str, line: bytes) -> int:
    """`$<length>` before a disk-based snapshot. `$EOF:` (diskless) is never asked for, so it is refused too."""
    m = _BULK.fullmatch(line)
    if m is None:
        raise ProtocolError(f"{address}: expected the snapshot's length after +FULLRESYNC, got {_shown(line)}")
    size = int(m.group(1))
    if size > MAX_SNAPSHOT:
        raise ProtocolError(f"{address}: announced a snapshot of {size} bytes, more than any node holds")
    return size


def error_of(address: str, line: bytes) -> Exception:
    """A `-ERR ...` line as the error it is: NOPERM is a refusal naming the rights this path needs; the others are
    the redis-py errors they would be, so redisops.connect names them the way it names every other."""
    text = line[1:].decode(errors="replace").strip()[:200]
    head = text.split(" ", 1)[0].upper()
    if head == "NOPERM":
        why = describe_redis_error(address, redis.exceptions.NoPermissionError(text))
        return AccessRefused(f"{why}; --via sync also needs +psync +replconf (or use --via transport)")
    if head in ("WRONGPASS", "NOAUTH") or "invalid password" in text.lower():
        return redis.AuthenticationError(text)
    return redis.ResponseError(text)


def _shown(line: bytes) -> str:
    return repr(line[:80].decode(errors="replace")) + ("..." if len(line) > 80 else "")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the node said about the snapshot it is sending."""

    address: str
    replid: str
    offset: int  # every write of history `replid` up to here is in the snapshot
    size: int
    rdb_only: bool  # the node knew we want the RDB only (7.0+)
    requested_at: float  # our clock when PSYNC was sent
    forked_s: float  # PSYNC to +FULLRESYNC: waiting for a save slot on the node and its fork
    ready_s: float  # PSYNC to the length: the whole disk save


class SnapshotStream:
    """One snapshot: `open()` waits until the node has saved it, `chunks()` yields its bytes, `close()` hangs up."""

    def __init__(self, opts: ConnectionOptions, host: str, port: int, timeout: float,
                 cancelled: Callable[[], bool] = lambda: False) -> None:
        self.opts, self.host, self.port = opts, host, port
        self.address = f"{host}:{port}"
        self.timeout, self.cancelled = timeout, cancelled
        self.sock: socket.socket | None = None
        self.buf = b""
        self.snapshot: Snapshot | None = None

    def __enter__(self) -> SnapshotStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def open(self) -> Snapshot:
        self.sock = self._connect()
        password = self.opts.password()
        if password is not None:
            args = ["AUTH", self.opts.username, password] if self.opts.username else ["AUTH", password]
            self._command(*args)
        rdb_only = self._command("REPLCONF", "rdb-only", "1", errors_ok=True)
        requested = time.time()
        t0 = time.monotonic()
        self._send("PSYNC", "?", "-1")
        deadline = t0 + self.timeout
        resync = parse_fullresync(self.address, self._reply_line(deadline, "its snapshot to start"))
        t_forked = time.monotonic()
        size = parse_bulk_length(self.address, self._reply_line(deadline, "its snapshot to be saved"))
        self.snapshot = Snapshot(self.address, resync.replid, resync.offset, size, rdb_only, requested,
                                 t_forked - t0, time.monotonic() - t0)
        return self.snapshot

    def chunks(self) -> Iterator[bytes]:
        """The snapshot's bytes, CHUNK at a time (the last may be shorter); then we hang up."""
        assert self.sock is not None and self.snapshot is not None, "open() first"
        remaining = self.snapshot.size
        if self.buf:
            head, self.buf = self.buf[:remaining], self.buf[remaining:]
            remaining -= len(head)
            yield head
        block = bytearray(CHUNK)
        view = memoryview(block)
        while remaining > 0:
            if self.cancelled():
                raise RunCancelled("backup cancelled")
            want = min(CHUNK, remaining)
            got = 0
            while got < want:
                n = self._recv_into(view[got:want], "the rest of its snapshot")
                got += n
            remaining -= got
            yield bytes(view[:got])
        self.close()  # the bytes after the RDB (a pre-7.0 node goes on to stream commands) are not ours

    def _connect(self) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.opts.connect_timeout)
        except TimeoutError as exc:
            raise redis.TimeoutError(f"Timeout connecting to {self.address}") from exc
        except OSError as exc:
            raise redis.ConnectionError(f"Error {exc.errno} connecting to {self.address}. {exc.strerror}.") from exc
        sock.settimeout(max(self.opts.socket_timeout, 1.0))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not self.opts.tls:
            return sock
        ctx = ssl.create_default_context(cafile=self.opts.cacert)
        if self.opts.cert:
            ctx.load_cert_chain(self.opts.cert, self.opts.key)
        if self.opts.tls_insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        try:
            return ctx.wrap_socket(sock, server_hostname=self.host)
        except (ssl.SSLError, OSError) as exc:
            sock.close()
            raise redis.ConnectionError(f"SSL handshake with {self.address} failed: {exc}") from exc

    def _send(self, *args: str) -> None:
        assert self.sock is not None
        out = [f"*{len(args)}\r\n".encode()]
        for a in args:
            b = a.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        try:
            self.sock.sendall(b"".join(out))
        except OSError as exc:
            raise redis.ConnectionError(f"{self.address}: connection lost while sending {args[0]}: {exc}") from exc

    def _command(self, *args: str, errors_ok: bool = False) -> bool:
        """A command answered by one status line. True for +OK; an error raises unless `errors_ok` (then False)."""
        self._send(*args)
        line = self._line(time.monotonic() + max(self.opts.socket_timeout, 1.0), f"an answer to {args[0]}")
        if line.startswith(b"+"):
            return True
        if line.startswith(b"-"):
            error = error_of(self.address, line)
            if errors_ok and not isinstance(error, AccessRefused):  # an older server's "unknown option"
                return False
            raise error
        raise ProtocolError(f"{self.address}: unexpected answer to {args[0]}: {_shown(line)}")

    def _reply_line(self, deadline: float, waiting_for: str) -> bytes:
        """The next line that is not a keep-alive newline; an error line raises."""
        while True:
            line = self._line(deadline, waiting_for)
            if line.startswith(b"-"):
                raise error_of(self.address, line)
            if line:
                return line

    def _line(self, deadline: float, waiting_for: str) -> bytes:
        """One line without its line end (a bare keep-alive newline is b"")."""
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                line, self.buf = self.buf[:end], self.buf[end + 1 :]
                return line.rstrip(b"\r")
            if len(self.buf) > MAX_LINE:
                raise ProtocolError(f"{self.address}: a reply line longer than {MAX_LINE} bytes: {_shown(self.buf)}")
            if time.monotonic() > deadline:
                raise StepFailed(f"{self.address}: no {waiting_for} within {self.timeout:.0f} s; see its log, or "
                                 "raise --timeout for a large dataset")
            if self.cancelled():
                raise RunCancelled("backup cancelled")
            block = bytearray(4096)
            n = self._recv_into(memoryview(block), waiting_for, deadline)
            self.buf += bytes(block[:n])

    def _recv_into(self, view: memoryview, waiting_for: str, deadline: float | None = None) -> int:
        """Bytes into `view`. Silence for the socket timeout fails; so does reaching `deadline` (the save's)."""
        assert self.sock is not None
        silence = max(self.opts.socket_timeout, 1.0)
        if deadline is not None:
            self.sock.settimeout(max(0.05, min(silence, deadline - time.monotonic())))
        try:
            n = self.sock.recv_into(view)
        except TimeoutError as exc:
            if deadline is not None and time.monotonic() >= deadline:
                raise StepFailed(f"{self.address}: no {waiting_for} within {self.timeout:.0f} s; see its log, or "
                                 "raise --timeout for a large dataset") from exc
            raise StepFailed(f"{self.address}: silent for {self.sock.gettimeout():.0f} s while we waited for "
                             f"{waiting_for}: is its host frozen or the network cut?") from exc
        except OSError as exc:
            raise StepFailed(f"{self.address}: connection lost while we waited for {waiting_for}: {exc}") from exc
        if n == 0:
            raise StepFailed(f"{self.address}: closed the connection while we waited for {waiting_for}; see its log")
        return n
