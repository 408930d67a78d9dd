"""Pin records: the true original settings of a node whose settings an AOF backup pins, kept on the control host.

An AOF backup sets `auto-aof-rewrite-percentage 0` (and with --relax-fsync `appendfsync no`) on its source while it
copies. Before the first CONFIG SET, the values it found are written here - one JSON file per node,
`$CLUSTERBAK_PIN_DIR` or `~/.clusterbak/pins/<host>_<port>.json`, written atomically (temp file, fsync, rename) - and
the file is removed only after the originals were set again *and read back*. So a kill -9 mid-run leaves the record
behind: `clusterbak check` compares it with the live settings (critical when they differ), `clusterbak unpin` puts
the originals back, and a later backup that finds a record takes its originals - never the pinned values it sees.

Why the control host and not the destination or the cluster: `check` and `unpin` have no --dest, and a key on the
cluster would be in every backup. The record names the host and pid that wrote it, for the operator running
`check` from another control host: run `unpin` there, or put back the values it prints.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from clusterbak.durable import fsync_dir
from clusterbak.errors import StepFailed

PIN_DIR_ENV = "CLUSTERBAK_PIN_DIR"


@dataclass(frozen=True, slots=True)
class PinRecord:
    address: str
    originals: dict[str, str]  # key -> the value before any clusterbak pinned it
    pinned: dict[str, str]  # key -> the value clusterbak set
    node_id: str | None = None
    pinned_at: float = field(default_factory=time.time)
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    command: str = "backup --aof"

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.pinned_at))
        return f"pinned by clusterbak {self.command} (pid {self.pid} on {self.host}) at {when}"


def pin_dir() -> Path:
    return Path(os.environ.get(PIN_DIR_ENV) or Path.home() / ".clusterbak" / "pins").absolute()


def record_path(address: str) -> Path:
    return pin_dir() / (address.replace(":", "_").replace("/", "_") + ".json")


def read_pin(address: str) -> PinRecord | None:
    path = record_path(address)
    try:
        doc = json.loads(path.read_text())
        return PinRecord(address=str(doc["address"]), originals={str(k): str(v) for k, v in doc["originals"].items()},
                         pinned={str(k): str(v) for k, v in doc["pinned"].items()}, node_id=doc.get("node_id"),
                         pinned_at=float(doc["pinned_at"]), host=str(doc["host"]), pid=int(doc["pid"]),
                         command=str(doc.get("command", "backup --aof")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StepFailed(f"{path}: unreadable pin record ({exc}); it holds the original settings of {address}: "
                         "read it, put them back by hand, then delete it") from exc


def write_pin(record: PinRecord) -> Path:
    """Atomically, and durably, before any CONFIG SET: a crash right after must still find it."""
    path = record_path(record.address)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(record), fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        raise StepFailed(f"{path}: cannot write the pin record ({exc.strerror}); nothing was pinned") from exc
    return path


def remove_pin(address: str) -> None:
    record_path(address).unlink(missing_ok=True)

