"""What a restore has done on each node, on disk, so an interrupted restore can be named, resumed or undone.

`<inventory>.restore.json` beside the inventory (like the rolling-restart state file), written atomically
(temp file, fsync, rename) before the first node is stopped and after every stop, placement and start. It
holds the plan that runs (so `--resume` and `--rollback` need no live target to re-plan), and per node:
stopped, the files moved aside (path -> its `.before-restore-ID` copy), placed, started. A finished restore
whose proof passed removes it; while it exists a new restore of the same inventory refuses.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from clusterbak.engine.rolling_state import write_json_atomically
from clusterbak.errors import PreconditionError
from clusterbak.plan.restore import NodeRestore, RestorePlan

KIND = "clusterbak-restore-journal"
FORMAT = 1


@dataclass
class NodeProgress:
    stopped: bool = False
    placing: bool = False  # set before its files are touched: a kill -9 here leaves `.before-restore-ID` copies
    moved: list[list[str]] = field(default_factory=list)  # [path, its aside copy]
    placed: bool = False
    started: bool = False


@dataclass
class RestoreJournal:
    backup_id: str
    dest: str
    plan: dict
    nodes: dict[str, NodeProgress]
    phase: str = "stopping"  # stopping | placing | starting | proving | rolling back
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    @staticmethod
    def new(plan: RestorePlan, dest: str) -> RestoreJournal:
        return RestoreJournal(plan.backup_id, dest, plan.to_dict(), {n.new_address: NodeProgress() for n in plan.nodes})

    def restore_plan(self) -> RestorePlan:
        raw = self.plan
        return RestorePlan(raw["backup_id"], tuple(NodeRestore(**n) for n in raw["nodes"]), tuple(raw["refusals"]),
                           tuple(raw["warnings"]))  # its steps follow from its nodes

    def summary(self) -> str:
        """The exact state, one phrase per kind of node."""
        groups: dict[str, list[str]] = {}
        for address, p in self.nodes.items():
            what = ("started with the restored files" if p.started else "stopped, restored files in place" if p.placed
                    else "stopped, placement cut short" if p.placing else "stopped, its own files untouched"
                    if p.stopped else "running, untouched")
            groups.setdefault(what, []).append(address)
        return "; ".join(f"{what}: {', '.join(addrs)}" for what, addrs in groups.items())

    def to_dict(self) -> dict:
        return {"kind": KIND, "format": FORMAT, "backup_id": self.backup_id, "dest": self.dest, "plan": self.plan,
                "nodes": {a: asdict(p) for a, p in self.nodes.items()}, "phase": self.phase,
                "created_at": self.created_at, "updated_at": self.updated_at}


def journal_path(inventory: str | Path) -> Path:
    """`inventory.toml` -> `inventory.restore.json` beside it."""
    path = Path(inventory).absolute()
    return path.with_name(path.stem + ".restore.json")


def load_journal(path: Path) -> RestoreJournal | None:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise PreconditionError(f"restore journal {path} cannot be read ({exc}); look at the nodes by hand") from exc
    if raw.get("kind") != KIND or raw.get("format") != FORMAT:
        raise PreconditionError(f"{path} is not a clusterbak restore journal (format {FORMAT})")
    return RestoreJournal(raw["backup_id"], raw["dest"], raw["plan"],
                          {a: NodeProgress(**p) for a, p in raw["nodes"].items()}, raw["phase"], raw["created_at"],
                          raw["updated_at"])


class Journal:
    """The journal of one run: thread-safe updates, each saved atomically before the call returns."""

    def __init__(self, path: Path | None, journal: RestoreJournal) -> None:
        self.path, self.data, self._lock = path, journal, threading.Lock()  # path None: kept in memory (a drill)
        if path is not None:  # a run killed while saving left its temp file
            for stale in path.parent.glob(f".{path.name}.tmp-*"):
                stale.unlink(missing_ok=True)
        self.save()

    def node(self, address: str) -> NodeProgress:
        return self.data.nodes[address]

    def mark(self, address: str | None = None, **changes) -> None:
        with self._lock:
            target = self.data.nodes[address] if address else self.data
            for key, value in changes.items():
                setattr(target, key, value)
            self._save_locked()

    def save(self) -> None:
        with self._lock:
            self._save_locked()

    def _save_locked(self) -> None:
        self.data.updated_at = time.time()
        if self.path is not None:
            write_json_atomically(self.path, self.data.to_dict())

    def remove(self) -> None:
        with self._lock:
            if self.path is not None:
                self.path.unlink(missing_ok=True)
