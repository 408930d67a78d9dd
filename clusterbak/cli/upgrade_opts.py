"""`rolling-restart --upgrade-command`: each node's server version before and after, rendered (the plan with its
upgrade steps is clusterbak.engine.upgrade.prepare_upgrade; see docs/rolling-upgrade.md)."""

from __future__ import annotations

from clusterbak.cli.render import Renderer


def show_versions(r: Renderer, before: dict[str, str | None], after: dict[str, str | None] | None) -> dict:
    rows = [(a, before[a] or "unreachable", "-" if after is None else after.get(a) or "unreachable") for a in before]
    r.table("server versions", ("node", "before", "after"), rows)
    return {a: {"before": b, "after": None if after is None else after.get(a)} for a, b in before.items()}
