"""Connection options shared by every command, and the one place Redis errors become ours."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from clusterbak.errors import ConnectError, UsageError

PASSWORD_ENV = "REDISCLI_AUTH"
# What a failed Redis call raises, named here for code outside redisops/ that calls a redisops function and reports
# the failure itself: only redisops/ (and the lab) import redis (tests/unit/test_layers.py).
RedisFailure = redis.RedisError


@dataclass(frozen=True, slots=True)
class ConnectionOptions:
    """How to talk to nodes. The password is never held here: it is read from the environment when a client is
    made, `$REDISCLI_AUTH` first, then the variable the inventory names (`[redis] password_env`)."""

    seed: str
    username: str | None = None
    password_env: str = PASSWORD_ENV
    tls: bool = False
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None
    connect_timeout: float = 3.0
    socket_timeout: float = 10.0
    tls_insecure: bool = False  # --tls-insecure-skip-verify: no certificate or hostname check (loudly named)

    def password(self) -> str | None:
        return os.environ.get(PASSWORD_ENV) or os.environ.get(self.password_env) or None

    def with_inventory(self, username: str | None, password_env: str) -> ConnectionOptions:
        """The inventory's [redis] credentials, unless --user / $REDISCLI_AUTH override them."""
        return replace(self, username=self.username or username, password_env=password_env)

    def at(self, seed: str) -> ConnectionOptions:
        return replace(self, seed=seed)

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
        host=host, port=port, username=opts.username, password=opts.password(),
        socket_connect_timeout=opts.connect_timeout,
        socket_timeout=socket_timeout if socket_timeout is not None else opts.socket_timeout,
        decode_responses=decode, retry=Retry(NoBackoff(), 0),
        # RESP2 AUTH, as redis-cli does: a password sent to a server that has none is an error, not ignored
        # (HELLO 3 AUTH default <pw> succeeds on a server without a password)
        protocol=2,
    )
    if opts.tls:
        kwargs.update(tls_options(opts))
    return redis.Redis(**kwargs)


def tls_options(opts: ConnectionOptions) -> dict:
    """Certificate and hostname checks set explicitly, whatever the redis-py version defaults to."""
    return dict(ssl=True, ssl_ca_certs=opts.cacert, ssl_certfile=opts.cert, ssl_keyfile=opts.key,
                ssl_cert_reqs="none" if opts.tls_insecure else "required",
                ssl_check_hostname=not opts.tls_insecure)


def is_down(exc: BaseException) -> bool:
    """Only a refused TCP connection or a timeout means "not running". Authentication, authorization (NOPERM) and
    TLS failures mean a node IS there and we may not talk to it: callers must not treat those as absence."""
    if isinstance(exc, (redis.AuthenticationError, redis.ResponseError)):
        return False
    if isinstance(exc, (redis.TimeoutError, TimeoutError, ConnectionRefusedError)):
        return True
    text = str(exc).lower()
    if isinstance(exc, redis.ConnectionError):
        if "ssl" in text or "certificate" in text or "tls" in text or "wrong version number" in text:
            return False
        return "connection refused" in text or "error 111 " in text or "timed out" in text or "timeout" in text
    return isinstance(exc, OSError) and ("connection refused" in text or "timed out" in text)


def describe_redis_error(address: str, exc: Exception, opts: ConnectionOptions | None = None) -> str:
    """One line that names the node and says what to do."""
    text = str(exc).strip() or type(exc).__name__
    low = text.lower()
    env = opts.password_env if opts else PASSWORD_ENV
    if "called without any password configured" in low or "no password is set" in low:
        return (f"{address}: AUTH failed: the server has no password but one was given (${PASSWORD_ENV} or "
                f"${env}); unset it or configure requirepass")
    if isinstance(exc, redis.AuthenticationError) or "noauth" in low or "wrongpass" in low or "invalid password" in low:
        return f"{address}: authentication failed ({text}); set the password in ${env} and the user with --user"
    if "noperm" in low or isinstance(exc, redis.exceptions.NoPermissionError):
        return (
            f"{address}: NOPERM: the user may not run a command clusterbak needs ({text}); see docs/security.md for "
            "the ACL rules of the backup and restart users"
        )
    if "ssl" in low or "certificate" in low:
        return (f"{address}: TLS failed ({text}); check --cacert (the CA that signed the node's certificate) and "
                "that the certificate names this address")
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
        if ("noauth" in low or "wrongpass" in low or "cluster support disabled" in low
                or isinstance(exc, redis.exceptions.NoPermissionError)):
            raise ConnectError(describe_redis_error(address, exc, opts)) from exc
        raise
    except (redis.ConnectionError, redis.TimeoutError, redis.AuthenticationError) as exc:
        raise ConnectError(describe_redis_error(address, exc, opts)) from exc
