"""Backup freshness checks and the retention policy merge: pure, no cluster."""

from __future__ import annotations

import pytest

from clusterbak.errors import UsageError
from clusterbak.model.freshness import (
    CRITICAL,
    OK,
    WARNING,
    SetFacts,
    Thresholds,
    backup_checks,
    nagios_line,
    parse_duration,
)
from clusterbak.model.retention import merge, parse_retention

NOW = 1_800_000_000.0
H = 3600.0


def s(i, age_h, size=1000, status="complete", verified=True, drilled_h=None, drill_ok=True):
    return SetFacts(f"set{i}", status, NOW - age_h * H, size, NOW if verified is not None else None, verified,
                    NOW - drilled_h * H if drilled_h is not None else None, drill_ok if drilled_h is not None else None)


def statuses(sets, **kw):
    return {c.name: c.status for c in backup_checks(sets, NOW, Thresholds(max_age_s=26 * H, **kw))}


def test_all_ok():
    got = statuses([s(1, 30), s(2, 2, drilled_h=24)])
    assert set(got.values()) == {OK}


def test_newest_verified_set_too_old_is_critical_even_if_a_newer_one_is_unverified():
    got = statuses([s(1, 30), s(2, 1, verified=None)])
    assert got["newest verified set"] == CRITICAL and got["last verify"] == WARNING


def test_failed_verify_failed_drill_and_too_few_sets():
    got = statuses([s(1, 1, verified=False, drilled_h=1, drill_ok=False)], min_sets=2)
    assert got["last verify"] == CRITICAL and got["last drill"] == CRITICAL and got["complete sets"] == CRITICAL


def test_size_drop_and_stale_partial_warn():
    got = statuses([s(1, 5, size=1000), s(2, 1, size=400), s(3, 40, status="partial", verified=None)])
    assert got["size vs previous set"] == WARNING and got["partial or damaged sets"] == WARNING


def test_nagios_line_and_codes():
    checks = backup_checks([s(1, 30)], NOW, Thresholds(26 * H))
    line, code = nagios_line(checks)
    assert code == 2 and line.startswith("CLUSTERBAK CRITICAL - newest verified set: set1 is 1.2d old")
    assert line.count("|") == 1 and "newest_verified_age=108000s" in line
    assert nagios_line(backup_checks([s(1, 1, drilled_h=1)], NOW, Thresholds(26 * H)))[1] == 0


@pytest.mark.parametrize("text, seconds", [("26h", 93600), ("90m", 5400), ("7d", 604800), ("3600", 3600)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-1h", "0"])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_retention_flags_win_and_say_where_each_value_came_from():
    config = parse_retention({"retention": {"keep_last": 3, "keep_daily": 7}}, "c.toml")
    policy = merge(config, "c.toml", {"keep_last": 5, "keep_daily": None, "keep_weekly": None,
                                      "partial_grace_hours": None})
    assert (policy.keep_last, policy.keep_daily, policy.keep_weekly) == (5, 7, 0)
    assert policy.where("keep_last") == "--keep-last" and policy.where("keep_daily") == "c.toml [retention]"
    assert policy.where("keep_weekly") == "default"


@pytest.mark.parametrize("table, says", [({"keep_lats": 1}, "unknown key 'keep_lats'"),
                                         ({"keep_last": 0}, "keep_last must be >= 1"),
                                         ({"keep_daily": "7"}, "must be a number")])
def test_retention_config_errors_name_the_file(table, says):
    with pytest.raises(UsageError, match=says):
        parse_retention({"retention": table}, "c.toml")


def test_no_policy_at_all_is_a_usage_error():
    with pytest.raises(UsageError, match="no retention policy"):
        merge({}, None, {"keep_last": None})
