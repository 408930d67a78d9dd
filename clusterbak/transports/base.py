"""The Transport protocol every way of reaching a node's host implements.

A transport never returns False: failures raise TransportError naming host and path.
Reads and writes stream in chunks; nothing holds a whole file in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from clusterbak.errors import TransportError

CHUNK = 1024 * 1024


def last_line(text: str) -> str:
    """The last line of a command's stderr, for a one-line error message."""
    lines = text.strip().splitlines()
    return lines[-1] if lines else "no output on stderr"


class Sink(Protocol):
    """Where fetch() streams one attempt of a file. A fresh sink is opened for every attempt.

    write() takes the chunks in order; close() commits a complete file (it may verify and raise);
    abort() throws away what this attempt wrote and must not raise. Exactly one of close()/abort() is called.
    """

    def write(self, chunk: bytes, /) -> object: ...

    def close(self) -> object: ...

    def abort(self) -> None: ...


OpenSink = Callable[[], Sink]


class ConnectionDropped(TransportError):
    """The connection to the host broke mid-operation: the operation may be retried from the start."""


def stream_into(chunks: Iterable[bytes], open_sink: OpenSink) -> int:
    """Open a sink, stream `chunks` into it and commit it; abort it on any failure. Returns bytes written."""
    sink = open_sink()
    written = 0
    it = iter(chunks)
    try:
        for chunk in it:
            sink.write(chunk)
            written += len(chunk)
    except BaseException:
        sink.abort()
        raise
    finally:
        close = getattr(it, "close", None)  # a generator: release its file or channel now, not at GC
        if close is not None:
            close()
    sink.close()
    return written


@dataclass(frozen=True, slots=True)
class RunResult:
    command: str
    exit_status: int
    stdout: str
    stderr: str


@dataclass(frozen=True, slots=True)
class FileStat:
    path: str
    size: int
    mtime: float
    mode: int


class Transport(Protocol):
    """What the engine needs from a host: run a command, stream a file out and in, stat."""

    @property
    def where(self) -> str:
        """A short label for messages: 'ssh redis@10.0.0.1:22', 'local', 'docker redis-a'."""

    def run(self, command: str, timeout: float = 60.0, check: bool = True) -> RunResult:
        """Run a shell command on the host; with check, a non-zero exit raises TransportError."""

    def read_chunks(self, path: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        """Stream a file's bytes. Raises TransportError if the file is missing or the read
        ends short of the size the file had when it was opened. Exactly that size is read."""

    def fetch(self, path: str, open_sink: OpenSink, chunk_size: int = CHUNK) -> int:
        """Copy a whole file into a sink from `open_sink()`; returns its size. A transport that retries
        (ssh on a dropped connection) opens a fresh sink per attempt and aborts the failed one, so nothing
        ever appends to half a file. Sink errors are not retried."""

    def write_from(self, path: str, source: BinaryIO, mode: int = 0o640) -> int:
        """Write a file atomically: a temp file beside `path`, fsync, rename. Returns bytes written."""

    def stat(self, path: str) -> FileStat | None:
        """The file's stat, or None when it does not exist."""

    def makedirs(self, path: str) -> None:
        """Create a directory and its parents on the host (exists already: fine)."""

    def rename(self, src: str, dst: str) -> None:
        """Rename on the host (used to move files aside, never to delete)."""

    def close(self) -> None: ...
