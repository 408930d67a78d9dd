"""Which backup sets a retention policy keeps. Pure: sets in, (keep, delete, reasons) out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True, slots=True)
class Candidate:
    backup_id: str
    status: str  # complete | incomplete | partial | damaged
    created_at: float
    verified: str = "never"  # ok | failed | never (the last `clusterbak verify`)


@dataclass(frozen=True, slots=True)
class PruneDecision:
    backup_id: str
    action: str  # keep | delete
    reason: str
    rule: str = ""  # the rule that decided: newest | keep_last | keep_daily | keep_weekly | partial_grace_hours | none


def plan_prune(sets: list[Candidate], now: float, keep_last: int, keep_daily: int = 0, keep_weekly: int = 0,
               partial_grace_s: float = 24 * 3600) -> list[PruneDecision]:
    """Keepers are complete sets that did not fail verification; the newest complete one and the newest verified
    one are never deleted. A set that failed verification or is incomplete is never a keeper: it goes once a
    keeper newer than it exists (until then it is all there is, and stays)."""
    complete = sorted((s for s in sets if s.status == "complete" and s.verified != "failed"),
                      key=lambda s: s.created_at, reverse=True)
    reasons: dict[str, tuple[str, str]] = {}
    verified = [s for s in complete if s.verified == "ok"]
    if verified:
        reasons[verified[0].backup_id] = ("newest_verified", "newest verified")
    for i, s in enumerate(complete[:max(keep_last, 1)]):  # the newest complete set is never deleted
        reasons.setdefault(s.backup_id, ("newest", "newest complete set") if i == 0 else
                           ("keep_last", f"{i + 1} of the newest {keep_last}"))
    for label, count, key in (("daily", keep_daily, _day), ("weekly", keep_weekly, _week)):
        seen: list[str] = []
        for s in complete:
            bucket = key(s.created_at)
            if bucket not in seen and len(seen) < count:
                seen.append(bucket)
                reasons.setdefault(s.backup_id, (f"keep_{label}", f"newest of {bucket} ({len(seen)} of {count})"))
    newest_keeper = max((s.created_at for s in complete), default=None)
    out = []
    for s in sorted(sets, key=lambda s: s.created_at):
        if s.status == "complete" and s.verified != "failed":
            rule, reason = reasons.get(s.backup_id, ("none", f"older than the newest {keep_last} and in no kept "
                                                             "day or week"))
            out.append(PruneDecision(s.backup_id, "keep" if rule != "none" else "delete", reason, rule))
        elif s.status in ("complete", "incomplete"):
            what = "failed verification" if s.verified == "failed" else "incomplete (not restorable as a whole)"
            if newest_keeper is not None and newest_keeper > s.created_at:
                out.append(PruneDecision(s.backup_id, "delete", f"{what}: not a keeper, a newer good set exists",
                                         "not_a_keeper"))
            else:
                out.append(PruneDecision(s.backup_id, "keep", f"{what}: not a keeper, but no newer good set exists",
                                         "not_a_keeper"))
        elif now - s.created_at > partial_grace_s:
            out.append(
                PruneDecision(
                    s.backup_id,
                    "delete",
                    f"stale {s.status} set older than {partial_grace_s / 3600:g} h",
                    "partial_grace_hours",
                )
            )
        else:
            out.append(
                PruneDecision(
                    s.backup_id,
                    "keep",
                    f"{s.status} set younger than the grace period (may be running)",
                    "partial_grace_hours",
                )
            )
    return out


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def _week(ts: float) -> str:
    year, week, _ = datetime.fromtimestamp(ts, UTC).isocalendar()
    return f"{year}-W{week:02d}"
