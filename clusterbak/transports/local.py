"""The local filesystem and shell, for nodes that run beside clusterbak."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from typing import BinaryIO

from clusterbak.durable import fsync_dir
from clusterbak.errors import TransportError
from clusterbak.transports.base import CHUNK, FileStat, OpenSink, RunResult, last_line, stream_into


class LocalTransport:
    """Runs commands with /bin/sh and reads/writes files directly. Nothing here is retried: a local
    failure does not go away by trying again."""

    @property
    def where(self) -> str:
        return "local"

    def run(self, command: str, timeout: float = 60.0, check: bool = True) -> RunResult:
        try:
            # A session of its own: a Ctrl-C at the terminal is for clusterbak (which finishes the step it is
            # in), not for a service command half-way through stopping and starting a node.
            proc = subprocess.run(
                command, shell=True, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            raise TransportError(f"local: `{command}` did not finish within {timeout:g}s") from None
        result = RunResult(
            command,
            proc.returncode,
            proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
        )
        if check and result.exit_status != 0:
            raise TransportError(f"local: `{command}` exited {result.exit_status}: {last_line(result.stderr)}")
        return result

    def read_chunks(self, path: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        try:
            f = open(path, "rb", buffering=0)
        except OSError as e:
            raise TransportError(f"local: cannot read {path}: {e.strerror}; check the path and permissions") from None
        with f:
            # The handle's size, not the path's: a save that renames a new file over `path`
            # leaves this handle on the old inode, whose size is what we must read in full.
            size = os.fstat(f.fileno()).st_size
            done = 0
            while done < size:
                try:
                    chunk = f.read(min(chunk_size, size - done))
                except OSError as e:
                    raise TransportError(f"local: reading {path} failed at byte {done}: {e.strerror}") from None
                if not chunk:
                    raise TransportError(
                        f"local: {path} ended after {done} of {size} bytes (truncated while read?); take it again"
                    )
                done += len(chunk)
                yield chunk

    def fetch(self, path: str, open_sink: OpenSink, chunk_size: int = CHUNK) -> int:
        return stream_into(self.read_chunks(path, chunk_size), open_sink)

    def write_from(self, path: str, source: BinaryIO, mode: int = 0o640) -> int:
        """A temp file with a random name beside `path`, created with O_EXCL|O_NOFOLLOW (a planted file or symlink
        is never written through), owned like the file it replaces (or its directory), fsync'd, renamed."""
        tmp = f"{path}.clusterbak-tmp-{secrets.token_hex(8)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode & 0o7777)
        except OSError as e:
            raise TransportError(
                f"local: cannot create {tmp}: {e.strerror}; check the directory exists and is writable"
            ) from None
        written = 0
        try:
            with os.fdopen(fd, "wb", buffering=0) as out:
                os.fchmod(out.fileno(), mode & 0o7777)  # the umask must not narrow the mode we were asked for
                _own_like(out.fileno(), path)
                while chunk := source.read(CHUNK):  # the source's own errors pass through unchanged
                    try:
                        _write_all(out.fileno(), chunk)
                    except OSError as e:
                        msg = f"local: writing {path} failed after {written} bytes: {e.strerror}"
                        raise TransportError(msg) from None
                    written += len(chunk)
                try:
                    os.fsync(out.fileno())
                except OSError as e:
                    raise TransportError(f"local: fsync of {tmp} failed: {e.strerror}") from None
            try:
                os.replace(tmp, path)
            except OSError as e:
                raise TransportError(f"local: cannot move {tmp} into place as {path}: {e.strerror}") from None
        except BaseException:
            _unlink_quietly(tmp)
            raise
        fsync_dir(os.path.dirname(os.path.abspath(path)), best_effort=True)
        return written

    def stat(self, path: str) -> FileStat | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise TransportError(f"local: cannot stat {path}: {e.strerror}") from None
        return FileStat(path, st.st_size, st.st_mtime, st.st_mode)

    def makedirs(self, path: str) -> None:
        if os.path.isdir(path):
            return
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise TransportError(f"local: cannot create {path}: {e.strerror}") from None
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            _own_like(fd, path, parent=True)
        finally:
            os.close(fd)

    def link(self, src: str, dst: str) -> bool:
        """`dst` as a hard link of `src` (a drill's lab: engine/placed_once.py). False when the filesystem, or a
        name already at `dst`, refuses it: the caller then writes a copy."""
        try:
            os.link(src, dst, follow_symlinks=False)
        except OSError:
            return False
        return True

    def rename(self, src: str, dst: str) -> None:
        if os.path.lexists(dst):
            raise TransportError(f"local: cannot rename {src} to {dst}: the target exists; move it aside first")
        try:
            os.rename(src, dst)
        except OSError as e:
            raise TransportError(f"local: cannot rename {src} to {dst}: {e.strerror}") from None
        fsync_dir(os.path.dirname(os.path.abspath(dst)), best_effort=True)

    def close(self) -> None:
        pass


def _own_like(fd: int, path: str, parent: bool = False) -> None:
    """Give an open file the owner and group of `path` (or of its directory when `path` does not exist yet)."""
    ref = path if (not parent and os.path.exists(path)) else os.path.dirname(os.path.abspath(path))
    try:
        st = os.stat(ref)
        os.fchown(fd, st.st_uid, st.st_gid)
    except OSError:
        pass  # not root: the file stays ours, which is what an unprivileged run can do


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
