"""Backup freshness checks, Barman-style: every check listed with OK / WARNING / CRITICAL. Pure.

Input: what the destination holds (one SetFacts per set, oldest first) and the thresholds; output: BackupChecks.
"""

from __future__ import annotations

from dataclasses import dataclass

OK, WARNING, CRITICAL = "OK", "WARNING", "CRITICAL"
NAGIOS_CODES = {OK: 0, WARNING: 1, CRITICAL: 2}


@dataclass(frozen=True, slots=True)
class SetFacts:
    backup_id: str
    status: str  # complete | partial | damaged
    created_at: float
    size: int
    verified_at: float | None = None  # the last verify's time ...
    verify_ok: bool | None = None  # ... and result; None: never verified
    drilled_at: float | None = None
    drill_ok: bool | None = None
    drill_rto: float | None = None


@dataclass(frozen=True, slots=True)
class BackupCheck:
    name: str
    status: str
    detail: str
    perf: tuple[tuple[str, float, str], ...] = ()  # (label, value, unit) for nagios performance data


@dataclass(frozen=True, slots=True)
class Thresholds:
    max_age_s: float
    min_sets: int = 1
    max_drill_age_s: float = 8 * 86400
    size_drop: float = 0.5  # WARNING when the newest set is smaller than this fraction of the previous one


def backup_checks(sets: list[SetFacts], now: float, t: Thresholds) -> list[BackupCheck]:
    complete = [s for s in sets if s.status == "complete"]
    return [_freshness(complete, now, t), _newest_verified(complete), _count(complete, t), _size(complete),
            _leftovers(sets, now, t), _drill(complete, now, t)]


def _freshness(complete: list[SetFacts], now: float, t: Thresholds) -> BackupCheck:
    verified = [s for s in complete if s.verify_ok]
    if not verified:
        return BackupCheck("newest verified set", CRITICAL,
                           f"no complete and verified set (run `clusterbak verify` after each backup); "
                           f"{len(complete)} complete set(s)")
    newest = verified[-1]
    age = now - newest.created_at
    status = OK if age <= t.max_age_s else CRITICAL
    return BackupCheck("newest verified set", status,
                       f"{newest.backup_id} is {_dur(age)} old (max {_dur(t.max_age_s)})",
                       (("newest_verified_age", round(age), "s"),))


def _newest_verified(complete: list[SetFacts]) -> BackupCheck:
    if not complete:
        return BackupCheck("last verify", CRITICAL, "no complete set")
    newest = complete[-1]
    if newest.verify_ok is None:
        return BackupCheck("last verify", WARNING, f"newest set {newest.backup_id} has not been verified yet")
    if not newest.verify_ok:
        return BackupCheck("last verify", CRITICAL, f"newest set {newest.backup_id} FAILED verification; "
                                                   f"`clusterbak verify {newest.backup_id}` names the bad file")
    return BackupCheck("last verify", OK, f"newest set {newest.backup_id} verified")


def _count(complete: list[SetFacts], t: Thresholds) -> BackupCheck:
    status = OK if len(complete) >= t.min_sets else CRITICAL
    return BackupCheck("complete sets", status, f"{len(complete)} (min {t.min_sets})",
                       (("complete_sets", len(complete), ""),))


def _size(complete: list[SetFacts]) -> BackupCheck:
    if len(complete) < 2:
        return BackupCheck("size vs previous set", OK, "fewer than two complete sets to compare")
    prev, last = complete[-2], complete[-1]
    ratio = last.size / prev.size if prev.size else 1.0
    detail = f"{last.backup_id} {_bytes(last.size)}, previous {_bytes(prev.size)} ({ratio:.0%})"
    return BackupCheck("size vs previous set", WARNING if ratio < 0.5 else OK,
                       detail + (": a sudden drop, was data lost or flushed?" if ratio < 0.5 else ""),
                       (("newest_set_bytes", last.size, "B"),))


def _leftovers(sets: list[SetFacts], now: float, t: Thresholds) -> BackupCheck:
    stale = [s.backup_id for s in sets if s.status == "partial" and now - s.created_at > t.max_age_s]
    damaged = [s.backup_id for s in sets if s.status == "damaged"]
    if not stale and not damaged:
        return BackupCheck("partial or damaged sets", OK, "none")
    parts = ([f"{len(stale)} stale partial ({', '.join(stale[:3])})"] if stale else []) + \
            ([f"{len(damaged)} damaged ({', '.join(damaged[:3])})"] if damaged else [])
    return BackupCheck("partial or damaged sets", WARNING, "; ".join(parts) + ": `clusterbak prune` removes them")


def _drill(complete: list[SetFacts], now: float, t: Thresholds) -> BackupCheck:
    drilled = sorted(((s.drilled_at, s) for s in complete if s.drilled_at is not None), key=lambda p: p[0])
    if not drilled:
        return BackupCheck("last drill", WARNING, "no drill recorded for any set: schedule `clusterbak drill`")
    drilled_at, last = drilled[-1]
    age = now - drilled_at
    if not last.drill_ok:
        return BackupCheck("last drill", CRITICAL, f"drill of {last.backup_id} FAILED {_dur(age)} ago")
    status = OK if age <= t.max_drill_age_s else WARNING
    rto = f", RTO {last.drill_rto:.1f}s" if last.drill_rto is not None else ""
    return BackupCheck("last drill", status, f"{last.backup_id} passed {_dur(age)} ago{rto} "
                                             f"(max {_dur(t.max_drill_age_s)})",
                       (("last_drill_age", round(age), "s"),))


def worst(checks: list[BackupCheck]) -> str:
    for status in (CRITICAL, WARNING):
        if any(c.status == status for c in checks):
            return status
    return OK


def nagios_line(checks: list[BackupCheck]) -> tuple[str, int]:
    """The plugin format: `CLUSTERBAK <STATE> - <summary> | <perfdata>`, and the exit code 0/1/2."""
    state = worst(checks)
    bad = [f"{c.name}: {c.detail}" for c in checks if c.status != OK]
    summary = "; ".join(bad) if bad else f"{len(checks)} checks ok"
    perf = " ".join(f"{label}={value:g}{unit}" for c in checks for label, value, unit in c.perf)
    line = f"CLUSTERBAK {state} - {summary}".replace("|", "/") + (f" | {perf}" if perf else "")
    return line, NAGIOS_CODES[state]


def parse_duration(text: str) -> float:
    """'26h', '90m', '7d', '3600' (seconds) -> seconds; ValueError naming the text otherwise."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    text = text.strip().lower()
    try:
        if text and text[-1] in units:
            value = float(text[:-1]) * units[text[-1]]
        else:
            value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a duration like 26h, 90m, 7d or 3600") from None
    if value <= 0:
        raise ValueError(f"{text!r} must be positive")
    return value


def _dur(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
