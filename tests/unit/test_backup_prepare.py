"""The backup's run options: the choices typer offers are the ones the engine knows, and --dry-run's JSON carries
every option of the run."""

from __future__ import annotations

import pytest

from clusterbak.engine.backup_prepare import check_backup_flags
from clusterbak.errors import UsageError
from clusterbak.plan.backup import SOURCES, BackupRun, Compress, Source
from clusterbak.storage.sink import COMPRESS_CHOICES


def test_choices_are_the_engines():
    assert tuple(c.value for c in Compress) == COMPRESS_CHOICES
    assert tuple(s.value for s in Source) == SOURCES == ("replica", "master", "auto")


def test_relax_fsync_without_aof_is_a_usage_error():
    with pytest.raises(UsageError, match="--relax-fsync"):
        check_backup_flags(aof=False, relax_fsync=True)
    check_backup_flags(aof=True, relax_fsync=True)


def test_the_run_is_printable_data():
    run = BackupRun("/b", parallel=3, compress=Compress.ZSTD.value, encrypted_to=("age1x",), signed=True)
    d = run.to_dict()
    assert d["parallel"] == 3 and d["compress"] == "zstd" and d["encrypted_to"] == ("age1x",) and d["signed"]
    assert set(d) >= {"dest", "timeout", "catch_up_timeout", "relax_fsync", "saves_per_host", "force"}
