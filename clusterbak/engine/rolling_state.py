"""The resumable state of a rolling restart: the plan, the run_ids it started from, one record per step.

Written atomically (temp file beside it, fsync, rename) at the start and the end of every step, so a crash,
a kill or Ctrl-C leaves either the old or the new file, never half of one.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from clusterbak.durable import fsync_dir
from clusterbak.errors import PreconditionError
from clusterbak.plan.rolling import RollingPlan

KIND = "clusterbak-rolling-restart"
FORMAT = 1
PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"


@dataclass
class StepRecord:
    index: int
    status: str = PENDING
    started_at: float | None = None
    finished_at: float | None = None
    run_id_before: str | None = None  # restart: read just before the command ran
    run_id_after: str | None = None
    downtime_s: float | None = None  # restart: command sent -> node answers with a new run_id, loaded
    gate_s: float | None = None  # restart: command sent -> every gate passed
    window_s: float | None = None  # failover: CLUSTER FAILOVER sent -> new master writable, old one redirecting
    confirm_s: float | None = None  # failover: -> every node's CLUSTER NODES agrees
    attempts: int = 0
    error: str | None = None


@dataclass
class RunState:
    plan: RollingPlan
    seed: str
    inventory: str
    run_ids_at_start: dict[str, str]  # node id -> run_id when the run was first started
    records: list[StepRecord]
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    finished: bool = False
    invocations: list[dict] = field(default_factory=list)  # one per run or --resume: started, ended, result
    final: dict | None = None

    @staticmethod
    def new(plan: RollingPlan, seed: str, inventory: str, run_ids: dict[str, str]) -> RunState:
        return RunState(plan, seed, inventory, run_ids, [StepRecord(s.index) for s in plan.steps])

    @property
    def done_count(self) -> int:
        return sum(1 for r in self.records if r.status == DONE)

    def first_unfinished(self) -> int | None:
        return next((r.index for r in self.records if r.status != DONE), None)

    def to_dict(self) -> dict:
        return {"kind": KIND, "format": FORMAT, "plan": self.plan.to_dict(), "seed": self.seed,
                "inventory": self.inventory, "run_ids_at_start": self.run_ids_at_start,
                "records": [asdict(r) for r in self.records], "created_at": self.created_at,
                "updated_at": self.updated_at, "finished": self.finished, "invocations": self.invocations,
                "final": self.final}


def default_state_path(inventory: str | Path) -> Path:
    """`inventory.toml` -> `inventory.rolling-restart.json` beside it."""
    path = Path(inventory).absolute()
    return path.with_name(path.stem + ".rolling-restart.json")


def load_state(path: Path) -> RunState | None:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise PreconditionError(
            f"rolling-restart state {path} cannot be read ({exc}); move it aside to start over") from exc
    if raw.get("kind") != KIND or raw.get("format") != FORMAT:
        raise PreconditionError(f"{path} is not a clusterbak rolling-restart state file (format {FORMAT})")
    return RunState(
        plan=RollingPlan.from_dict(raw["plan"]), seed=raw["seed"], inventory=raw["inventory"],
        run_ids_at_start=raw["run_ids_at_start"], records=[StepRecord(**r) for r in raw["records"]],
        created_at=raw["created_at"], updated_at=raw["updated_at"], finished=raw["finished"],
        invocations=raw["invocations"], final=raw.get("final"))


def save_state(path: Path, state: RunState) -> None:
    state.updated_at = time.time()
    write_json_atomically(path, state.to_dict())


def write_json_atomically(path: Path, doc: dict) -> None:
    """Temp file beside it, fsync, rename, fsync the directory: a crash leaves the old or the new file, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    data = json.dumps(doc, indent=2).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
