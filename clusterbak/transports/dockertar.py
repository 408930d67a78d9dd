"""Tar streams for the Docker archive endpoints, and the engine's path stat in POSIX terms.

The engine sends a file as a tar stream and takes one as a tar stream; these helpers read one member as its
chunks arrive and write one member from a body of known size, never holding a whole file in memory.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat as statmod
import tarfile
import tempfile
from collections.abc import Iterator
from datetime import datetime
from typing import BinaryIO

from clusterbak.errors import TransportError
from clusterbak.transports.base import CHUNK

# Go's os.FileMode type bits, as the engine reports them in a path stat
GO_DIR, GO_SYMLINK, GO_DEVICE, GO_PIPE, GO_SOCKET = 1 << 31, 1 << 27, 1 << 26, 1 << 25, 1 << 24
GO_SETUID, GO_SETGID, GO_CHARDEV, GO_STICKY = 1 << 23, 1 << 22, 1 << 21, 1 << 20


class TarReader:
    """Reads a tar stream as it arrives in chunks: headers one by one, then a member's data in pieces as large
    as the chunks themselves (no copy through tarfile's 512-byte machinery, which halves the throughput)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buf = memoryview(b"")
        self._left = 0  # data bytes of the current member not yet taken
        self._pad = 0

    def take(self, n: int) -> bytes:
        """Up to n bytes (fewer at a chunk boundary); b"" only at the end of the stream."""
        while not self._buf:
            try:
                self._buf = memoryview(next(self._chunks))
            except StopIteration:
                return b""
        piece, self._buf = self._buf[:n], self._buf[n:]
        self._left = max(0, self._left - len(piece))
        return bytes(piece)

    def exactly(self, n: int) -> bytes:
        parts, got = [], 0
        while got < n:
            piece = self.take(n - got)
            if not piece:
                raise EOFError
            parts.append(piece)
            got += len(piece)
        return b"".join(parts)

    def next_member(self) -> tarfile.TarInfo | None:
        """The next member's header, with PAX and GNU long-name records applied; None at the end."""
        if self._left or self._pad:
            self.exactly(self._left + self._pad)
        overrides: dict[str, str] = {}
        while True:
            try:
                info = tarfile.TarInfo.frombuf(self.exactly(tarfile.BLOCKSIZE), "utf-8", "surrogateescape")
            except tarfile.EOFHeaderError:  # type: ignore[attr-defined]  # in tarfile, not in typeshed
                return None
            data_blocks = -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
                raw = self.exactly(data_blocks)[: info.size]
                if info.type == tarfile.XHDTYPE:
                    overrides.update(_pax_records(raw))
                elif info.type == tarfile.GNUTYPE_LONGNAME:
                    overrides["path"] = raw.rstrip(b"\0").decode("utf-8", "surrogateescape")
                elif info.type == tarfile.GNUTYPE_LONGLINK:
                    overrides["linkpath"] = raw.rstrip(b"\0").decode("utf-8", "surrogateescape")
                continue
            info.size = int(overrides.get("size", info.size))
            info.name = overrides.get("path", info.name)
            info.linkname = overrides.get("linkpath", info.linkname)
            self._left = info.size if info.isfile() else 0
            self._pad = (-self._left) % tarfile.BLOCKSIZE
            return info

    def drain(self) -> None:
        while self.take(1 << 20):
            pass


def _pax_records(raw: bytes) -> dict[str, str]:
    """`LEN key=value\n` records of a PAX extended header."""
    out, pos = {}, 0
    while pos < len(raw):
        space = raw.index(b" ", pos)
        length = int(raw[pos:space])
        key, _, value = raw[space + 1: pos + length - 1].partition(b"=")
        out[key.decode()] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


def tar_stream(info: tarfile.TarInfo, body: BinaryIO) -> Iterator[bytes]:
    """One-member tar archive as chunks: header, the body in CHUNK pieces, padding, end-of-archive blocks."""
    yield info.tobuf(format=tarfile.PAX_FORMAT)
    sent = 0
    while chunk := body.read(CHUNK):
        sent += len(chunk)
        if sent > info.size:
            break
        yield chunk
    if sent != info.size:
        raise TransportError(f"the source of {info.name} gave {sent} bytes, not the {info.size} it had")
    yield b"\0" * ((-info.size) % tarfile.BLOCKSIZE) + b"\0" * (2 * tarfile.BLOCKSIZE)


@contextlib.contextmanager
def sized(source: BinaryIO) -> Iterator[tuple[BinaryIO, int]]:
    """(a readable body, its size): the source itself when it is a regular file, else a spooled copy."""
    try:
        fd = source.fileno()
        st = os.fstat(fd)
        if statmod.S_ISREG(st.st_mode):
            yield source, st.st_size - source.tell()
            return
    except (AttributeError, OSError, io.UnsupportedOperation):
        pass
    with tempfile.TemporaryFile(prefix="clusterbak-spool-", dir=os.environ.get("CLUSTERBAK_SPOOL_DIR")) as spool:
        while chunk := source.read(CHUNK):
            spool.write(chunk)
        size = spool.tell()
        spool.seek(0)
        yield spool, size


def unix_mode(go_mode: int) -> int:
    perm = go_mode & 0o777
    if go_mode & GO_DIR:
        kind = statmod.S_IFDIR
    elif go_mode & GO_SYMLINK:
        kind = statmod.S_IFLNK
    elif go_mode & GO_PIPE:
        kind = statmod.S_IFIFO
    elif go_mode & GO_SOCKET:
        kind = statmod.S_IFSOCK
    elif go_mode & GO_DEVICE:
        kind = statmod.S_IFCHR if go_mode & GO_CHARDEV else statmod.S_IFBLK
    else:
        kind = statmod.S_IFREG
    extra = ((statmod.S_ISUID if go_mode & GO_SETUID else 0) | (statmod.S_ISGID if go_mode & GO_SETGID else 0)
             | (statmod.S_ISVTX if go_mode & GO_STICKY else 0))
    return kind | extra | perm


def mtime_of(text: str) -> float:
    """RFC 3339 with up to nanoseconds (Go) -> a POSIX timestamp; 0.0 when absent."""
    if not text:
        return 0.0
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.replace("Z", "+00:00"))
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0
