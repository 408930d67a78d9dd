"""restore-keys' Redis side: read keys out of a scratch server with SCAN/DUMP, write them with RESTORE ... ABSTTL.

The hot path uses raw pipelined RESP over one socket per server (hiredis parses the replies): a batch of commands is
sent in one write, and the replies of several servers are awaited only after every server has its batch.
"""

from __future__ import annotations

import socket
import ssl
import time

import hiredis
import redis

from clusterbak.errors import ConnectError, PreconditionError, StepFailed
from clusterbak.model.topology import SlotRange
from clusterbak.plan.restore_keys import ServerVersion, TargetMaster
from clusterbak.redisops.connect import (
    ConnectionOptions,
    describe_redis_error,
    make_client,
    redis_errors,
    split_address,
)
from clusterbak.redisops.discover import discover

EXPIRED_CHANNEL = b"__keyevent@0__:expired"
SCAN_COUNT = 1000
ReplyError = hiredis.ReplyError  # an error reply among a Pipe's replies (the caller tells them apart by this type)


def pack(commands: list[tuple]) -> bytes:
    out = []
    for args in commands:
        out.append(b"*%d\r\n" % len(args))
        for a in args:
            if not isinstance(a, bytes):
                a = str(a).encode()
            out.append(b"$%d\r\n%b\r\n" % (len(a), a))
    return b"".join(out)


_READ = b"*2\r\n$4\r\nDUMP\r\n$%d\r\n%b\r\n*2\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n"
_RESTORE = b"*%d\r\n$7\r\nRESTORE\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n%b"
_EXISTS = b"*2\r\n$6\r\nEXISTS\r\n$%d\r\n%b\r\n"


def dump_commands(keys: list[bytes], expire_cmd: bytes) -> bytes:
    """DUMP k + <expire_cmd> k for every key, packed (the hot path: no per-argument type checks)."""
    n = len(expire_cmd)
    return b"".join([_READ % (len(k), k, n, expire_cmd, len(k), k) for k in keys])


def restore_command(name: bytes, ttl: int, payload: bytes, replace: bool) -> bytes:
    """RESTORE name ttl payload [ABSTTL] [REPLACE], packed; ttl 0 means no expiry."""
    t = b"%d" % ttl
    tail = (b"$6\r\nABSTTL\r\n" if ttl else b"") + (b"$7\r\nREPLACE\r\n" if replace else b"")
    return _RESTORE % (4 + (1 if ttl else 0) + (1 if replace else 0), len(name), name, len(t), t, len(payload), payload,
                       tail)


def exists_command(name: bytes) -> bytes:
    return _EXISTS % (len(name), name)


def migrate_command(address: str, keys: list[bytes], timeout_ms: int, replace: bool, username: str | None,
                    password: str | None) -> bytes:
    """MIGRATE host port "" 0 timeout COPY [REPLACE] [AUTH pw | AUTH2 user pw] KEYS k..., packed: the server it is
    sent to DUMPs the keys and RESTOREs them into `address` itself (the remaining TTL goes along), keeping its own."""
    host, port = split_address(address)
    head = [b"MIGRATE", host.encode(), b"%d" % port, b"", b"0", b"%d" % timeout_ms, b"COPY"]
    if replace:
        head.append(b"REPLACE")
    if password:
        head += [b"AUTH2", username.encode(), password.encode()] if username else [b"AUTH", password.encode()]
    head.append(b"KEYS")
    parts = [b"*%d\r\n" % (len(head) + len(keys))]
    parts += [b"$%d\r\n%b\r\n" % (len(a), a) for a in head]
    parts += [b"$%d\r\n%b\r\n" % (len(k), k) for k in keys]
    return b"".join(parts)


class Pipe:
    """One RESP connection: send a batch of commands, then read exactly that many replies.
    Error replies come back as hiredis.ReplyError values, not exceptions: a batch is judged reply by reply."""

    def __init__(self, address: str, *, username: str | None = None, password: str | None = None,
                 tls: ssl.SSLContext | None = None, connect_timeout: float = 3.0, timeout: float = 60.0,
                 opts: ConnectionOptions | None = None) -> None:
        self.address = address
        host, port = split_address(address)
        try:
            sock = socket.create_connection((host, port), timeout=connect_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                sock = tls.wrap_socket(sock, server_hostname=host)
            sock.settimeout(timeout)
        except OSError as exc:
            raise ConnectError(describe_redis_error(address, exc, opts)) from exc
        self.sock = sock
        self.reader = hiredis.Reader()
        if password:
            reply = self.call(*(("AUTH", username, password) if username else ("AUTH", password)), check=False)
            if isinstance(reply, hiredis.ReplyError):
                self.close()
                raise ConnectError(describe_redis_error(address, redis.AuthenticationError(str(reply)), opts))

    def send(self, commands: list[tuple]) -> None:
        if commands:
            self.send_packed(pack(commands))

    def send_packed(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise StepFailed(f"{self.address}: connection lost while sending: {exc}") from exc

    def read(self, count: int) -> list:
        out: list = []
        while len(out) < count:
            reply = self.reader.gets()
            if reply is False:
                try:
                    data = self.sock.recv(1 << 20)
                except OSError as exc:
                    raise StepFailed(f"{self.address}: connection lost while reading: {exc}") from exc
                if not data:
                    raise StepFailed(f"{self.address}: connection closed by the server")
                self.reader.feed(data)
                continue
            out.append(reply)
        return out

    def call(self, *args, check: bool = True):
        self.send([args])
        (reply,) = self.read(1)
        if check and isinstance(reply, hiredis.ReplyError):
            raise StepFailed(f"{self.address}: {args[0]} failed: {reply}")
        return reply

    def abort(self) -> None:
        """From another thread: make a blocked send/recv on this connection return at once."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def tls_context(opts: ConnectionOptions) -> ssl.SSLContext | None:
    """The same checks as every other connection (connect.tls_options): chain and host name, unless
    --tls-insecure-skip-verify."""
    if not opts.tls:
        return None
    ctx = ssl.create_default_context(cafile=opts.cacert)
    if opts.tls_insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if opts.cert:
        ctx.load_cert_chain(opts.cert, opts.key)
    return ctx


def open_pipe(opts: ConnectionOptions, address: str, timeout: float = 60.0) -> Pipe:
    return Pipe(address, username=opts.username, password=opts.password(), tls=tls_context(opts),
                connect_timeout=opts.connect_timeout, timeout=timeout, opts=opts)


# --- the target -------------------------------------------------------------------------------------------------


def read_target(opts: ConnectionOptions, standalone: bool) -> list[TargetMaster]:
    """The target's masters with their slots and versions, from a fresh read. Standalone: the seed, every slot."""
    if standalone:
        info = _info(opts, opts.seed)
        if str(info.get("cluster_enabled", "0")) == "1":
            raise PreconditionError(f"{opts.seed} is a cluster node; drop --standalone to write to the cluster")
        return [TargetMaster(opts.seed, (SlotRange(0, 16383),), ServerVersion.from_info(info), _keys(info))]
    topology = discover(opts)
    masters = [n for n in topology.nodes if n.is_master and n.slots]
    failing = [n.address for n in masters if n.is_failing]
    if failing:
        raise PreconditionError(f"target master {failing[0]} is failing; wait for a failover or fix it first")
    out = []
    for node in masters:
        info = _info(opts, node.address)
        out.append(TargetMaster(node.address, node.slots, ServerVersion.from_info(info), _keys(info)))
    return out


def _info(opts: ConnectionOptions, address: str) -> dict:
    host, port = split_address(address)
    client = make_client(opts, host, port)
    try:
        with redis_errors(address, opts):
            return client.info("all")
    except redis.RedisError as exc:
        raise ConnectError(describe_redis_error(address, exc, opts)) from exc
    finally:
        client.close()


def _keys(info: dict) -> int:
    db0 = info.get("db0")
    return int(db0.get("keys", 0)) if isinstance(db0, dict) else 0


# --- the scratch server ----------------------------------------------------------------------------------------


def wait_loaded(pipe: Pipe, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        reply = pipe.call("INFO", "persistence", check=False)
        text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
        if "loading:0" in text.splitlines():  # a line of its own: async_loading:0 is another field
            return
        if time.monotonic() > deadline:
            raise StepFailed(f"scratch server {pipe.address} still loading after {timeout:.0f}s")
        time.sleep(0.05)


def scan(pipe: Pipe, match: bytes | None, count: int = SCAN_COUNT):
    """Batches of key names from SCAN [MATCH]; bounded by the keyspace (the server is not written to).
    The next SCAN is sent before a batch is handed out, so the server works while the caller does: give this
    generator a connection of its own, or drain it before using the connection for anything else."""
    def request(cursor: bytes) -> None:
        pipe.send([("SCAN", cursor, "COUNT", count) + (("MATCH", match) if match is not None else ())])

    request(b"0")
    while True:
        (reply,) = pipe.read(1)
        if isinstance(reply, hiredis.ReplyError):
            raise StepFailed(f"{pipe.address}: SCAN failed: {reply}")
        cursor, keys = reply
        if cursor != b"0":
            request(cursor)
        if keys:
            yield keys
        if cursor == b"0":
            return

