"""The retention policy: from a `[retention]` table of clusterbak.toml, overridden by prune's flags. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from clusterbak.errors import UsageError

RULES: dict[str, type | tuple[type, ...]] = {
    "keep_last": int, "keep_daily": int, "keep_weekly": int, "partial_grace_hours": (int, float)}


@dataclass(frozen=True, slots=True)
class Retention:
    keep_last: int | None = None
    keep_daily: int = 0
    keep_weekly: int = 0
    partial_grace_hours: float = 24.0
    origin: tuple[tuple[str, str], ...] = ()  # rule -> where its value came from ("--keep-last", "FILE [retention]")

    def where(self, rule: str) -> str:
        return dict(self.origin).get(rule, "default")


def parse_retention(data: Mapping[str, Any], source: str) -> dict[str, Any]:
    """The [retention] table of a config file as {rule: value}; unknown keys and bad values name the file."""
    table = data.get("retention", {})
    if not isinstance(table, Mapping):
        raise UsageError(f"{source}: [retention] must be a table")
    unknown = sorted(set(table) - set(RULES))
    if unknown:
        raise UsageError(f"{source}: [retention] has unknown key {unknown[0]!r}; known: {', '.join(RULES)}")
    out = {}
    for key, value in table.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not isinstance(value, RULES[key]) \
                or value < 0:
            raise UsageError(f"{source}: [retention] {key} = {value!r} must be a number >= 0")
        if key == "keep_last" and value < 1:
            raise UsageError(f"{source}: [retention] keep_last must be >= 1 (the newest set is always kept)")
        out[key] = value
    return out


def merge(config: dict[str, Any], config_source: str | None, flags: dict[str, Any]) -> Retention:
    """Flags given on the command line win over the file; `keep_last` must come from one of them."""
    values, origin = {}, {}
    for rule in RULES:
        if flags.get(rule) is not None:
            values[rule], origin[rule] = flags[rule], "--" + rule.replace("_", "-")
        elif rule in config:
            values[rule], origin[rule] = config[rule], f"{config_source} [retention]"
    if values.get("keep_last") is None:
        raise UsageError("no retention policy: pass --keep-last N, or set keep_last in the [retention] table of "
                         "--config FILE (docs/scheduling.md)")
    return Retention(origin=tuple(origin.items()), **values)
