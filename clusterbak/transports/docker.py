"""A node inside a Docker container, through the Docker Engine API (the docker SDK; never the docker CLI).

Files leave through the archive endpoint (`get_archive`): its tar stream is unpacked as the chunks arrive
(clusterbak.transports.dockertar), so no file is ever whole in memory. They enter with `put_archive` under a
temp name, which a second step checks for size, fsyncs and renames into place. Commands run with `exec` in the
running container (exit status checked). Files can be read, written and renamed while the container is stopped
(a restore does that): the archive endpoints work on stopped containers, and the rename then runs in a
short-lived helper container made from the same image with the target's volumes (`volumes_from`), no network.

The container itself can be stopped, started and restarted through the Engine: by the methods of the same
names (clusterbak.transports.service uses them for a docker node without commands), and by run() when the
command is `docker stop|start|restart NAME` naming this container, as an inventory may write it.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import posixpath
import secrets
import shlex
import tarfile
import threading
import time
from collections.abc import Iterator
from typing import BinaryIO

import docker
import docker.errors
import requests
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from clusterbak.errors import TransportError
from clusterbak.transports.base import CHUNK, ConnectionDropped, FileStat, OpenSink, RunResult, last_line, stream_into
from clusterbak.transports.dockertar import TarReader, mtime_of, sized, tar_stream, unix_mode
from clusterbak.transports.ssh import COMMIT_SCRIPT, MKDIR_SCRIPT, RENAME_SCRIPT

SYMLINK_HOPS = 8
LIFECYCLE = ("start", "stop", "restart")
HELPER_LABEL = "org.clusterbak.helper-for"
ENGINE_LOST = (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
               requests.exceptions.Timeout)


def engine_client(timeout: float = 60.0, label: str = "docker") -> docker.DockerClient:
    """A client for the engine named by DOCKER_HOST (default: the local socket), API version negotiated."""
    try:
        return docker.from_env(timeout=int(timeout))
    except docker.errors.DockerException as e:
        host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        raise TransportError(f"{label}: cannot reach the Docker Engine at {host}: {_short(e)}; "
                             "is dockerd running, and may this user use its socket?") from None


class DockerTransport:
    """One container, by name or id. The engine client is made lazily and shared by every call."""

    def __init__(self, container: str | None, *, client: docker.DockerClient | None = None,
                 io_timeout: float = 60.0, attempts: int = 3, retry_wait: float = 0.5) -> None:
        if not container:
            raise TransportError("docker: no container given; set `container` for this node in the inventory")
        self.name = container
        self.io_timeout = io_timeout
        self.attempts = max(1, attempts)
        self.retry_wait = retry_wait
        self._client = client
        self._lock = threading.Lock()

    @property
    def where(self) -> str:
        return f"docker {self.name}"

    @property
    def client(self) -> docker.DockerClient:
        with self._lock:
            if self._client is None:
                self._client = engine_client(self.io_timeout, self.where)
            return self._client

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def __enter__(self) -> DockerTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the Transport protocol ---------------------------------------------------------------------------

    def run(self, command: str, timeout: float = 60.0, check: bool = True) -> RunResult:
        """`sh -c COMMAND` through exec in the running container. The commands `docker start|stop|restart NAME`
        naming this very container are done through the Engine API instead (so an inventory may say
        `restart_command = "docker restart {container}"`); no docker CLI is involved."""
        action = self._lifecycle(command)
        if action is not None:
            getattr(self, action)(timeout=timeout)
            return RunResult(command, 0, "", "")
        code, out, err = self._exec(self._running(), ["sh", "-c", command], timeout, f"`{command}`")
        result = RunResult(command, code, out, err)
        if check and code != 0:
            raise TransportError(f"{self.where}: `{command}` exited {code}: {last_line(err)}")
        return result

    def read_chunks(self, path: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        """One attempt: the tar stream of `path` from get_archive, unpacked as it arrives. Exactly the size the
        archive's header announces is read; a stream that ends short raises ConnectionDropped."""
        target, done, size = path, 0, -1
        for _ in range(SYMLINK_HOPS):
            with self._errors(f"reading {path}", path):
                bits, _stat = self._container().get_archive(target, chunk_size=chunk_size)
            tar = TarReader(bits)
            try:
                with self._errors(f"reading {path}", path):
                    member = tar.next_member()
                    if member is not None and member.issym():
                        target = posixpath.normpath(posixpath.join(posixpath.dirname(target), member.linkname))
                        continue
                    if member is None or not member.isfile():
                        raise TransportError(f"{self.where}: {path} is not a regular file")
                    size = member.size
                    while done < size and (data := tar.take(min(chunk_size, size - done))):
                        done += len(data)
                        yield data
                    if done != size:
                        raise EOFError
                    tar.drain()  # the padding and end blocks: the engine's response ends cleanly
                    return
            except (tarfile.TarError, EOFError):
                raise ConnectionDropped(f"{self.where}: read of {path} ended after {done} of "
                                        f"{size if size >= 0 else '?'} bytes (the engine's archive stream broke "
                                        f"or the file changed while read); take it again") from None
            finally:
                bits.close()
        raise TransportError(f"{self.where}: {path}: more than {SYMLINK_HOPS} symbolic links")

    def fetch(self, path: str, open_sink: OpenSink, chunk_size: int = CHUNK) -> int:
        """Copy `path` into a fresh sink per attempt; a broken archive stream restarts at byte 0."""
        retrying = Retrying(stop=stop_after_attempt(self.attempts), wait=wait_exponential(multiplier=self.retry_wait),
                            retry=retry_if_exception_type(ConnectionDropped), reraise=True)
        try:
            return retrying(lambda: stream_into(self.read_chunks(path, chunk_size), open_sink))
        except ConnectionDropped as e:
            raise ConnectionDropped(f"{e}; gave up on {path} after {self.attempts} attempts") from None

    def write_from(self, path: str, source: BinaryIO, mode: int = 0o640) -> int:
        """put_archive into `PATH.clusterbak-tmp-XXXXXXXX` (owned like the file it replaces, or its directory),
        then check its size, fsync it and `mv -f` it into place. A source whose size cannot be known up front
        (a pipe, a decompressor) is spooled to a temp file on this host first: a tar header carries the size."""
        directory, tmp = posixpath.dirname(path) or "/", f"{path}.clusterbak-tmp-{secrets.token_hex(4)}"
        uid, gid = self._owner(path)
        with sized(source) as (body, size):
            info = tarfile.TarInfo(posixpath.basename(tmp))
            info.size, info.mode, info.mtime, info.uid, info.gid = size, mode & 0o7777, int(time.time()), uid, gid
            try:
                with self._errors(f"writing {tmp}", tmp):
                    self._container().put_archive(directory, tar_stream(info, body))
            except BaseException:
                self._discard(tmp)
                raise
        done = self._sh(COMMIT_SCRIPT, tmp, path, str(size), f"{mode & 0o7777:o}")
        if done.exit_status != 0:
            raise TransportError(f"{self.where}: cannot move {tmp} into place as {path}: {last_line(done.stderr)}")
        return size

    def stat(self, path: str) -> FileStat | None:
        """The engine's stat of the path (a symlink is followed), from a HEAD of the archive endpoint."""
        target = path
        for _ in range(SYMLINK_HOPS):
            found = self._path_stat(target)
            if found is None:
                return None
            if not found.get("linkTarget"):
                return FileStat(path, int(found.get("size", 0)), mtime_of(found.get("mtime", "")),
                                unix_mode(int(found.get("mode", 0))))
            target = found["linkTarget"]
        raise TransportError(f"{self.where}: {path}: more than {SYMLINK_HOPS} symbolic links")

    def rename(self, src: str, dst: str) -> None:
        """`mv src dst`; refuses when dst exists (a rename moves aside, it never deletes)."""
        done = self._sh(RENAME_SCRIPT, src, dst)
        if done.exit_status != 0:
            raise TransportError(f"{self.where}: cannot rename {src} to {dst}: {last_line(done.stderr)}")

    def makedirs(self, path: str) -> None:
        """`mkdir -p` in the container, or in a helper with its volumes when it is stopped (a restore stops it)."""
        done = self._sh(MKDIR_SCRIPT, path)
        if done.exit_status != 0:
            raise TransportError(f"{self.where}: cannot create {path}: {last_line(done.stderr)}")

    # -- the container's own lifecycle (used when the inventory gives no restart/stop/start command) ------

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the container (SIGTERM, then SIGKILL after the grace period); returns once it is stopped."""
        container = self._container()
        with self._errors("stopping the container"):
            container.stop(timeout=max(1, int(timeout)))
        self._wait_state(lambda c: not c.attrs["State"]["Running"], timeout, "stop")

    def start(self, timeout: float = 60.0) -> None:
        """Start the container; returns once the engine reports it running."""
        container = self._container()
        with self._errors("starting the container"):
            container.start()
        self._wait_state(lambda c: c.attrs["State"]["Running"], timeout, "start")

    def restart(self, timeout: float = 60.0) -> None:
        """Restart the container; returns once it runs again with a new start time."""
        container = self._container()
        before = container.attrs["State"].get("StartedAt")
        with self._errors("restarting the container"):
            container.restart(timeout=max(1, int(timeout)))
        self._wait_state(lambda c: c.attrs["State"]["Running"] and c.attrs["State"].get("StartedAt") != before,
                         timeout, "restart")

    # -- internals ----------------------------------------------------------------------------------------

    def _lifecycle(self, command: str) -> str | None:
        try:
            argv = shlex.split(command)
        except ValueError:
            return None
        if len(argv) == 3 and argv[0] == "docker" and argv[1] in LIFECYCLE and argv[2] == self.name:
            return argv[1]
        return None

    def _container(self):
        client = self.client
        try:
            return client.containers.get(self.name)
        except docker.errors.NotFound:
            raise TransportError(
                f"{self.where}: no such container on the Docker Engine; check `container` "
                "for this node in the inventory (`docker ps -a` lists them)"
            ) from None
        except ENGINE_LOST as e:
            raise ConnectionDropped(f"{self.where}: lost the Docker Engine: {_short(e)}") from None
        except docker.errors.DockerException as e:
            raise TransportError(
                f"{self.where}: the Docker Engine failed to look the container up: {_short(e)}"
            ) from None

    def _running(self):
        container = self._container()
        if container.status != "running":
            raise TransportError(f"{self.where}: the container is {container.status}, not running; start it "
                                 f"(or see why it stopped: docker logs {self.name})")
        return container

    @contextlib.contextmanager
    def _errors(self, what: str, path: str | None = None) -> Iterator[None]:
        try:
            yield
        except docker.errors.NotFound as e:
            detail = f"no such file or directory: {path}" if path else _short(e)
            raise TransportError(f"{self.where}: {what}: {detail}") from None
        except docker.errors.APIError as e:
            if e.status_code == 409:
                raise TransportError(f"{self.where}: {what}: the container is not running ({_short(e)})") from None
            raise TransportError(
                f"{self.where}: {what}: the Docker Engine answered {e.status_code}: {_short(e)}"
            ) from None
        except ENGINE_LOST as e:
            raise ConnectionDropped(f"{self.where}: lost the Docker Engine while {what}: {_short(e)}") from None
        except docker.errors.DockerException as e:
            raise TransportError(f"{self.where}: {what}: {_short(e)}") from None

    def _exec(self, container, argv: list[str], timeout: float, what: str) -> tuple[int, str, str]:
        """exec_run in a worker thread, so a command that hangs is reported after `timeout`."""
        box: dict = {}

        def work() -> None:
            try:
                box["result"] = container.exec_run(argv, demux=True)
            except BaseException as e:  # handed to the caller's thread
                box["error"] = e

        worker = threading.Thread(target=work, daemon=True, name=f"exec {self.name}")
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            raise TransportError(f"{self.where}: {what} did not finish within {timeout:g}s")
        if "error" in box:
            with self._errors(what):
                raise box["error"]
        code, (out, err) = box["result"].exit_code, box["result"].output or (None, None)
        return int(code if code is not None else -1), _text(out), _text(err)

    def _sh(self, script: str, *args: str) -> RunResult:
        """A POSIX sh script with args: in the container when it runs, else in a helper with its volumes."""
        argv = ["sh", "-c", script, "clusterbak", *args]
        container = self._container()
        if container.status == "running":
            code, out, err = self._exec(container, argv, self.io_timeout, argv[2][:40])
        else:
            code, out, err = self._helper(container, argv)
        return RunResult(script, code, out, err)

    def _helper(self, container, argv: list[str]) -> tuple[int, str, str]:
        with self._errors("running a helper container for a file operation"):
            helper = self.client.containers.create(
                container.image.id, entrypoint=argv[:2], command=argv[2:], user="0", network_mode="none",
                volumes_from=[container.id], labels={HELPER_LABEL: container.name})
        try:
            with self._errors("running a helper container for a file operation"):
                helper.start()
                code = helper.wait(timeout=self.io_timeout).get("StatusCode", -1)
                out, err = helper.logs(stdout=True, stderr=False), helper.logs(stdout=False, stderr=True)
        finally:
            with contextlib.suppress(docker.errors.DockerException, *ENGINE_LOST):
                helper.remove(force=True)
        if code != 0 and b"No such file" in err:
            err += (b"\n(the container is stopped: only files on its volumes can be moved; start it, or keep "
                    b"the data directory on a volume)")
        return int(code), _text(out), _text(err)

    def _discard(self, tmp: str) -> None:
        with contextlib.suppress(TransportError):
            self._sh('rm -f -- "$1"', tmp)

    def _path_stat(self, path: str) -> dict | None:
        container = self._container()
        api = self.client.api
        with self._errors(f"stat {path}", path):
            # HEAD of the archive endpoint: the stat header without any data (the SDK has no public call for it)
            res = api.head(api._url("/containers/{0}/archive", container.id), params={"path": path})
            if res.status_code == 404:
                return None
            api._raise_for_status(res)
        header = res.headers.get("X-Docker-Container-Path-Stat")
        try:
            return json.loads(base64.b64decode(header or ""))
        except (ValueError, binascii.Error):
            raise TransportError(f"{self.where}: the engine sent no usable stat for {path}") from None

    def _owner(self, path: str) -> tuple[int, int]:
        """uid/gid of `path`, or of its directory when it does not exist yet, from the first tar header."""
        target = path if self._path_stat(path) is not None else (posixpath.dirname(path) or "/")
        with self._errors(f"reading the owner of {target}", target):
            bits, _stat = self._container().get_archive(target, chunk_size=64 * 1024)
        try:
            with self._errors(f"reading the owner of {target}", target):
                member = TarReader(bits).next_member()
        except (tarfile.TarError, EOFError):
            member = None
        finally:
            bits.close()
        if member is None:
            raise TransportError(f"{self.where}: cannot read the owner of {target} from the engine's archive")
        return member.uid, member.gid

    def _wait_state(self, ready, timeout: float, action: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            container = self._container()
            if ready(container):
                return
            state = container.attrs["State"]
            if action != "stop" and state.get("Status") in ("exited", "dead"):
                raise TransportError(f"{self.where}: the container exited (code {state.get('ExitCode')}) after "
                                     f"{action}: {last_line(self._logs(container))}")
            if time.monotonic() > deadline:
                raise TransportError(f"{self.where}: {action} not done within {timeout:g}s "
                                     f"(state {state.get('Status')})")
            time.sleep(0.1)

    def _logs(self, container) -> str:
        try:
            return _text(container.logs(tail=5))
        except docker.errors.DockerException:
            return ""


def _short(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    text = str(explanation or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _text(data: bytes | None) -> str:
    return (data or b"").decode(errors="replace")
