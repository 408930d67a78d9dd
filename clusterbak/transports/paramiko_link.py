"""The paramiko side of SshTransport: open a checked, tuned connection, and a faster channel read buffer.

Kept apart from ssh.py so that the operations (run, read, write, stat) read as a page and the paramiko
internals we lean on (Channel.in_buffer, BufferedPipe) sit in one place.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

import paramiko
from paramiko.buffered_pipe import BufferedPipe, PipeTimeout

from clusterbak.errors import TransportError
from clusterbak.transports.base import ConnectionDropped

PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr")
KEEPALIVE_SECONDS = 15
# Failures of the link itself: worth reconnecting and starting over. (Auth and host-key failures are
# SSHExceptions too, but open_client turns them into plain TransportErrors first.)
LINK_ERRORS = (EOFError, OSError, paramiko.SSHException)


@dataclass(frozen=True, slots=True)
class LinkSettings:
    where: str  # "ssh user@host:port", the prefix of every message
    hostname: str
    port: int
    user: str
    key_files: tuple[str, ...]  # empty: ssh-agent and ~/.ssh/id_* keys
    known_hosts: str
    accept_new_host_keys: bool
    connect_timeout: float
    window_size: int
    max_packet_size: int

    @property
    def host_key_name(self) -> str:
        """How known_hosts names this host: `host` on port 22, `[host]:port` otherwise."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


def open_client(s: LinkSettings) -> paramiko.SSHClient:
    """Connect, check the host key, authenticate. Raises TransportError (ConnectionDropped when the network
    or the handshake failed, which a caller may retry)."""
    try:
        sock = socket.create_connection((s.hostname, s.port), timeout=s.connect_timeout)
    except OSError as e:
        raise ConnectionDropped(
            f"{s.where}: cannot connect: {e.strerror or e}; check the host is up and sshd listens on port {s.port}"
        ) from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # paramiko never sets it
    client = paramiko.SSHClient()
    try:
        if os.path.isfile(s.known_hosts):
            client.load_host_keys(s.known_hosts)
    except (OSError, paramiko.SSHException) as e:
        sock.close()
        raise TransportError(f"{s.where}: cannot read known_hosts {s.known_hosts}: {e}; fix or move it") from None
    client.set_missing_host_key_policy(HostKeyPolicy(s))

    def transport_factory(sock: socket.socket, **kwargs: object) -> paramiko.Transport:
        t = paramiko.Transport(
            sock, default_window_size=s.window_size, default_max_packet_size=s.max_packet_size, **kwargs
        )
        opts = t.get_security_options()
        offered = list(opts.ciphers)  # ours first where this paramiko has them, then the rest in its order
        ours = [c for c in PREFERRED_CIPHERS if c in offered]
        opts.ciphers = ours + [c for c in offered if c not in ours]
        return t

    try:
        client.connect(
            s.hostname,
            s.port,
            username=s.user,
            key_filename=list(s.key_files) or None,
            allow_agent=not s.key_files,
            look_for_keys=not s.key_files,
            timeout=s.connect_timeout,
            banner_timeout=s.connect_timeout,
            auth_timeout=s.connect_timeout,
            sock=sock,
            transport_factory=transport_factory,
        )
    except BaseException as e:
        client.close()
        sock.close()
        raise _connect_error(s, e) from None
    t = client.get_transport()
    assert t is not None
    t.set_keepalive(KEEPALIVE_SECONDS)
    return client


def _connect_error(s: LinkSettings, e: BaseException) -> BaseException:
    if isinstance(e, TransportError):
        return e
    if isinstance(e, paramiko.BadHostKeyException):
        return TransportError(
            f"{s.where}: host key CHANGED (server sent {e.key.get_name()} {e.key.fingerprint}, {s.known_hosts} "
            f"has {e.expected_key.fingerprint}); refused, also with --accept-new-host-keys; if the host was "
            f"re-keyed on purpose, run `ssh-keygen -R '{s.host_key_name}' -f {s.known_hosts}` and connect again"
        )
    if isinstance(e, paramiko.AuthenticationException):
        keys = ", ".join(s.key_files) or "ssh-agent and ~/.ssh/id_* keys"
        return TransportError(
            f"{s.where}: authentication as {s.user} failed with {keys}; "
            f"add the public key to that user's authorized_keys or pass --ssh-key"
        )
    if isinstance(e, LINK_ERRORS):
        return ConnectionDropped(f"{s.where}: SSH handshake failed: {e or type(e).__name__}")
    return e


class HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Unknown host key: refuse, or with accept_new_host_keys append it to known_hosts (OpenSSH's
    StrictHostKeyChecking=accept-new). A changed key never gets here: paramiko raises BadHostKeyException."""

    def __init__(self, settings: LinkSettings) -> None:
        self.s = settings

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        s = self.s
        if not s.accept_new_host_keys:
            raise TransportError(
                f"{s.where}: host key of {hostname} ({key.get_name()} {key.fingerprint}) is not in {s.known_hosts}; "
                f"verify it and add it there, or pass --accept-new-host-keys to trust a new (never a changed) key"
            )
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        try:
            os.makedirs(os.path.dirname(s.known_hosts) or ".", mode=0o700, exist_ok=True)
            with open(s.known_hosts, "a+", encoding="ascii") as f:
                f.seek(0)
                text = f.read()
                f.write(line if not text or text.endswith("\n") else "\n" + line)
        except OSError as e:
            raise TransportError(f"{s.where}: cannot add the host key to {s.known_hosts}: {e.strerror}") from None


class BatchingPipe(BufferedPipe):
    """A channel's stdout buffer that wakes the reader once `low_water` bytes are buffered (or at EOF, or
    `linger` seconds after some data came), not on every 32 KiB packet, and keeps packets as a list of bytes
    instead of copying them into and out of an array. Measured on loopback (500 MB, 2 cores): the reader's
    system CPU fell from ~0.6 s to ~0.12 s (far fewer futex wake-ups and GIL hand-offs), the rate rose from
    ~300 to ~500+ MB/s. Install it as `chan.in_buffer` before exec_command, while it is still empty."""

    def __init__(self, low_water: int, linger: float = 0.02) -> None:
        super().__init__()
        self._chunks: list[bytes] = []
        self._size = 0
        self._low_water = low_water
        self._linger = linger

    def feed(self, data: bytes) -> None:
        with self._lock:
            self._chunks.append(bytes(data))
            self._size += len(data)
            if self._event is not None:
                self._event.set()
            if self._size >= self._low_water:
                self._cv.notify_all()

    def read_ready(self) -> bool:
        return self._size > 0

    def __len__(self) -> int:
        return self._size

    def set_event(self, event) -> None:  # paramiko's event or pipe
        with self._lock:
            self._event = event
            event.set() if self._closed or self._size else event.clear()

    def empty(self) -> bytes:
        with self._lock:
            return self._take(self._size)

    def read(self, nbytes: int, timeout: float | None = None) -> bytes:
        want = min(nbytes, self._low_water)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._size < want and not self._closed:
                if self._size:  # some data: give the rest `linger` to arrive, then return what there is
                    self._cv.wait(self._linger)
                    if self._size:
                        break
                elif deadline is None:
                    self._cv.wait()
                elif (left := deadline - time.monotonic()) <= 0:
                    raise PipeTimeout()
                else:
                    self._cv.wait(left)
            return self._take(min(nbytes, self._size))

    def _take(self, n: int) -> bytes:
        if n >= self._size:
            out = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
            self._chunks, self._size = [], 0
            if self._event is not None and not self._closed:
                self._event.clear()
            return out
        parts, need = [], n
        while need:
            first = self._chunks[0]
            if len(first) <= need:
                parts.append(self._chunks.pop(0))
                need -= len(first)
            else:
                parts.append(first[:need])
                self._chunks[0] = first[need:]
                need = 0
        self._size -= n
        return b"".join(parts)
