"""A backup before its plan runs: the flags checked, the cluster inspected and gated, the plan made.

The CLI renders the plan (with the run's options: what --dry-run prints is what runs), asks nothing, and hands
the prepared backup to engine/backup.py's `run_backup`."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from clusterbak.engine.inspect import Inspection, inspect
from clusterbak.errors import UsageError
from clusterbak.model.inventory import Inventory
from clusterbak.plan.backup import BackupPlan, BackupRun, Via, plan_backup
from clusterbak.redisops.connect import ConnectionOptions

# critical findings that stop a backup unless --force: a set taken now would not be one consistent cluster
GATE_CODES = frozenset({"cluster_state", "slots_uncovered", "open_slot", "slot_map_disagrees"})
FORCE_HINT = "use --force to back up anyway"


def new_backup_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


def check_backup_flags(aof: bool, relax_fsync: bool, via: str = Via.TRANSPORT.value) -> None:
    """Flag combinations that make no sense: a usage error (2) before any connection."""
    if relax_fsync and not aof:
        raise UsageError("--relax-fsync only applies to --aof backups")
    if aof and via != Via.TRANSPORT.value:
        raise UsageError("--via sync streams an RDB snapshot; an --aof backup copies the AOF files over the transport")


@dataclass(frozen=True, slots=True)
class PreparedBackup:
    seen: Inspection
    plan: BackupPlan
    run: BackupRun
    gate: tuple[str, ...]  # critical findings of the cluster (GATE_CODES)

    @property
    def refusals(self) -> tuple[str, ...]:
        """Why the run may not start (exit 3); () when it may. The gate first: --force passes it, never a refusal."""
        if self.gate and not self.run.force:
            return (*self.gate, FORCE_HINT)
        return self.plan.refusals

    def to_dict(self) -> dict[str, Any]:
        return {"backup_id": self.plan.backup_id, "plan": self.plan.to_dict(), "run": self.run.to_dict(),
                "gate": list(self.gate)}


def prepare_backup(conn: ConnectionOptions, inventory: Inventory, run: BackupRun, *, source: str, max_lag: int,
                   aof: bool, backup_id: str | None = None) -> PreparedBackup:
    """Inspect the cluster (the `check` preflight), gate it and plan which node snapshots each shard."""
    check_backup_flags(aof, run.relax_fsync, run.via)
    seen = inspect(conn, None, max_lag)
    gate = tuple(f"{f.subject}: {f.message}" for f in seen.findings
                 if f.severity == "critical" and f.code in GATE_CODES)
    plan = plan_backup(backup_id or new_backup_id(), seen.topology, seen.states, inventory, source, max_lag, aof,
                       run.saves_per_host)
    return PreparedBackup(seen, plan, run, gate)
