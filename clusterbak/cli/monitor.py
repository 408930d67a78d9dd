"""`check`'s two halves (the cluster through --seed, the backups in --dest) and its Nagios plugin mode."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path

import typer

from clusterbak.cli import common as c
from clusterbak.cli import repo_opts as ro
from clusterbak.cli.views import finding_view
from clusterbak.config import load_inventory
from clusterbak.engine.freshness import gather_set_facts
from clusterbak.engine.inspect import inspect
from clusterbak.errors import ClusterbakError, PreconditionError, UsageError
from clusterbak.model.freshness import (
    CRITICAL,
    OK,
    WARNING,
    BackupCheck,
    Thresholds,
    backup_checks,
    nagios_line,
    parse_duration,
)
from clusterbak.storage.local import LocalRepository

NAGIOS_UNKNOWN = 3
SEVERITY_STATUS = {"critical": CRITICAL, "warning": WARNING}


def run_checks(seed: str | None, dest: str | None, inventory: str | None, conn_args: tuple, max_lag: int,
               limits: tuple[str, int, str], s3: tuple[str | None, bool] = (None, False),
               ) -> tuple[list[dict] | None, list[dict] | None]:
    thresholds = _thresholds(*limits)  # a bad --max-age is a usage error before anything is contacted
    cluster = backups = None
    if seed:
        user, tls, cacert, cert, key, connect_timeout, tls_insecure = conn_args
        inv = load_inventory(inventory) if inventory else None
        opts = c.connection(seed, user, tls, cacert, cert, key, connect_timeout, inv, tls_insecure)
        cluster = [finding_view(f) for f in inspect(opts, inv, max_lag).findings]
    if dest:
        backups = [asdict(x) for x in dest_checks(dest, thresholds, *s3)]
    return cluster, backups


def dest_checks(dest: str, thresholds: Thresholds, s3_endpoint_url: str | None = None,
                s3_path_style: bool = False) -> list[BackupCheck]:
    """The same checks for a directory and an s3:// repository; a destination that is not there (a missing
    directory or bucket, refused credentials) is one CRITICAL line, never an empty "no backups"."""
    if dest.startswith("s3://"):
        try:
            repo = ro.repository(dest, s3_endpoint_url, s3_path_style)
        except PreconditionError as exc:
            return [BackupCheck("destination", CRITICAL, str(exc))]
        where = repo.url
    else:
        root = Path(dest).absolute()
        if not root.is_dir():
            what = "does not exist" if not root.exists() else "is not a directory"
            return [BackupCheck("destination", CRITICAL, f"{root} {what}: check --dest (a typo looks like no backups)")]
        repo, where = LocalRepository(root), str(root)
    return [BackupCheck("destination", OK, where), *backup_checks(gather_set_facts(repo), time.time(), thresholds)]


def _thresholds(max_age: str, min_sets: int, max_drill_age: str) -> Thresholds:
    from clusterbak.errors import UsageError

    try:
        return Thresholds(parse_duration(max_age), min_sets, parse_duration(max_drill_age))
    except ValueError as exc:
        raise UsageError(f"--max-age/--max-drill-age: {exc}") from None


def check_nagios(seed: str | None, dest: str | None, inventory: str | None, conn_args: tuple, max_lag: int,
                 limits: tuple[str, int, str], s3: tuple[str | None, bool] = (None, False)) -> None:
    """One line on stdout, the plugin exit code; anything that stops the checks themselves is UNKNOWN (3)."""
    try:
        if not seed and not dest:
            raise UsageError("check needs --seed, --dest or both")
        cluster, backups = run_checks(seed, dest, inventory, conn_args, max_lag, limits, s3)
    except ClusterbakError as exc:
        _nagios_exit(f"CLUSTERBAK UNKNOWN - {exc}", NAGIOS_UNKNOWN)
    except Exception as exc:  # noqa: BLE001 - a plugin must still print one line and UNKNOWN
        _nagios_exit(f"CLUSTERBAK UNKNOWN - unexpected {type(exc).__name__}: {exc}", NAGIOS_UNKNOWN)
    checks = [BackupCheck(**b) for b in backups or ()]
    for f in cluster or ():
        if f["severity"] in SEVERITY_STATUS:
            checks.append(BackupCheck(f"cluster {f['subject']}", SEVERITY_STATUS[f["severity"]], f["message"]))
    if cluster is not None and not any(f["severity"] in SEVERITY_STATUS for f in cluster):
        checks.append(BackupCheck("cluster", OK, f"healthy as seen from {seed}"))
    line, code = nagios_line(checks)
    _nagios_exit(line, code)


def _nagios_exit(line: str, code: int) -> None:
    sys.stdout.write(line.replace("\n", " ") + "\n")
    sys.stdout.flush()
    raise typer.Exit(code)
