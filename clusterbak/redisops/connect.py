"""Connection options shared by every command, and the one place Redis errors become ours."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from clusterbak.errors import ConnectError, UsageError

PASSWORD_ENV = "REDISCLI_AUTH"


@dataclass(frozen=True, slots=True)
class ConnectionOptions:
    seed: str
    username: str | None = None
    password_env: str = PASSWORD_ENV
    tls: bool = False
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    connect_timeout: float = 3.0
    socket_timeout: float = 10.0

    @property
    def seed_host(self) -> str:
        return split_address(self.seed)[0]

    @property
    def seed_port(self) -> int:
        return split_address(self.seed)[1]

    def __repr__(self) -> str:  # never show a password, even by accident
        return f"ConnectionOptions(seed={self.seed!r}, username={self.username!r}, tls={self.tls})"


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"{address!r} is not HOST:PORT (for example 127.0.0.1:7000)")
    return host.strip("[]"), int(port)


def make_client(opts: ConnectionOptions, host: str, port: int, *, decode: bool = True,
                socket_timeout: float | None = None) -> redis.Redis:
    kwargs: dict = dict(
        host=host, port=port, username=opts.username, password=os.environ.get(opts.password_env) or None,
        socket_connect_timeout=opts.connect_timeout,
        socket_timeout=socket_timeout if socket_timeout is not None else opts.socket_timeout,
        decode_responses=decode, retry=Retry(NoBackoff(), 0),
    )
    if opts.tls:
        kwargs.update(ssl=True, ssl_ca_certs=opts.cacert, ssl_certfile=opts.cert, ssl_keyfile=opts.key)
    return redis.Redis(**kwargs)


def describe_redis_error(address: str, exc: Exception, opts: ConnectionOptions | None = None) -> str:
    """One line that names the node and says what to do."""
    text = str(exc).strip() or type(exc).__name__
    low = text.lower()
    env = opts.password_env if opts else PASSWORD_ENV
    if isinstance(exc, redis.AuthenticationError) or "noauth" in low or "wrongpass" in low or "invalid password" in low:
        return f"{address}: authentication failed ({text}); set the password in ${env} and the user with --user"
    if "cluster support disabled" in low:
        return f"{address} is not a Redis Cluster node (cluster-enabled no); point --seed at a cluster member"
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, OSError)):
        return f"cannot reach {address}: {text}; check the address, the firewall and that redis-server is running"
    return f"{address}: {text}"


@contextmanager
def redis_errors(address: str, opts: ConnectionOptions | None = None) -> Iterator[None]:
    """Turn connection/auth/cluster-disabled failures into ConnectError naming the node."""
    try:
        yield
    except redis.ResponseError as exc:
        low = str(exc).lower()
        if "noauth" in low or "wrongpass" in low or "cluster support disabled" in low:
            raise ConnectError(describe_redis_error(address, exc, opts)) from exc
        raise
    except (redis.ConnectionError, redis.TimeoutError, redis.AuthenticationError) as exc:
        raise ConnectError(describe_redis_error(address, exc, opts)) from exc
