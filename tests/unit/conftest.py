"""Fixtures for unit tests: real RDB files written by a throwaway standalone redis-server."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass(frozen=True, slots=True)
class RdbFiles:
    populated: Path  # the keys below, rdbchecksum yes
    expected_keys: int
    expected_expires: int
    no_checksum: Path  # the same keys, saved with rdbchecksum no
    empty: Path  # no keys at all


def _load_keys(r) -> tuple[int, int]:
    """A few hundred keys of mixed types, some with TTLs; returns (keys, expires) as loaded."""
    pipe = r.pipeline(transaction=False)
    keys = expires = 0
    for i in range(300):
        kind = i % 6
        key = f"k:{kind}:{i}"
        if kind == 0:
            pipe.set(key, f"value-{i}" * (1 + i % 40))  # long repetitive values get LZF-compressed
        elif kind == 1:
            pipe.set(key, i * 1000)  # integer-encoded string
        elif kind == 2:
            pipe.rpush(key, *[f"item{j}" for j in range(1 + i % 20)])
        elif kind == 3:
            pipe.hset(key, mapping={f"f{j}": j for j in range(1 + i % 10)})
        elif kind == 4:
            pipe.sadd(key, *range(1 + i % 15))
        else:
            pipe.zadd(key, {f"m{j}": j / 3 for j in range(1 + i % 12)})
        keys += 1
        if i % 4 == 0:
            pipe.expire(key, 3600 + i)
            expires += 1
    pipe.xadd("stream:1", {"a": "1"})
    keys += 1
    pipe.execute()
    return keys, expires


@contextmanager
def _redis_server(directory: Path, *extra: str) -> Iterator[Any]:
    """A standalone redis-server with TCP off (port 0), reached over a unix socket in `directory`."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server not found: install it (e.g. apt-get install redis-server) to run the RDB tests")
    redis = pytest.importorskip("redis")
    sock = directory / "s.sock"
    proc = subprocess.Popen(
        [server, "--port", "0", "--unixsocket", str(sock), "--dir", str(directory), "--save", "",
         "--appendonly", "no", "--daemonize", "no", "--logfile", str(directory / "redis.log"), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        r = redis.Redis(unix_socket_path=str(sock))
        deadline = time.monotonic() + 10
        while True:
            try:
                r.ping()
                break
            except redis.exceptions.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"redis-server did not start; see {directory / 'redis.log'}")
                time.sleep(0.05)
        yield r
        r.close()
    finally:  # SIGTERM: with --save "" the server exits without saving (SHUTDOWN via redis-py retries for ~3 s)
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)


def _save(r: Any, directory: Path, name: str) -> Path:
    r.save()  # dbfilename is a protected config in Redis 7: rename the dump instead
    return (directory / "dump.rdb").rename(directory / name)


@pytest.fixture(scope="session")
def rdb_files(tmp_path_factory: pytest.TempPathFactory) -> RdbFiles:
    tmp = tmp_path_factory.mktemp("rdb")
    with _redis_server(tmp) as r:
        empty = _save(r, tmp, "empty.rdb")
        keys, expires = _load_keys(r)
        info = r.info("keyspace")["db0"]
        assert (info["keys"], info["expires"]) == (keys, expires)
        populated = _save(r, tmp, "populated.rdb")
    nocrc_dir = tmp_path_factory.mktemp("rdb-nocrc")
    with _redis_server(nocrc_dir, "--rdbchecksum", "no") as r:  # rdbchecksum cannot be changed at runtime
        _load_keys(r)
        no_checksum = _save(r, nocrc_dir, "nocrc.rdb")
    return RdbFiles(populated, keys, expires, no_checksum, empty)


@pytest.fixture(scope="session")
def real_rdb(rdb_files: RdbFiles) -> tuple[Path, int, int]:
    """(path, expected_keys, expected_expires) of an RDB that redis-server saved."""
    return rdb_files.populated, rdb_files.expected_keys, rdb_files.expected_expires
