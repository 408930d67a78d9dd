"""`rolling-restart --upgrade-command`: the rolling restart's plan with each restart step replaced by an upgrade
(clusterbak.plan.upgrade), each node's server version before and after (see docs/rolling-upgrade.md)."""

from __future__ import annotations

from dataclasses import replace

from clusterbak.cli.render import Renderer
from clusterbak.engine.rolling import Prepared
from clusterbak.model.inventory import Inventory
from clusterbak.model.versions import ServerVersion
from clusterbak.plan.upgrade import order_refusals, with_upgrade
from clusterbak.redisops.connect import ConnectionOptions
from clusterbak.redisops.nodeinfo import server_versions


def apply_upgrade(
    prep: Prepared, template: str, inventory: Inventory, conn: ConnectionOptions
) -> tuple[Prepared, dict[str, str | None]]:
    """The plan with upgrade steps, its order refusals added; and every node's version now, by address."""
    plan = with_upgrade(prep.plan, template, inventory)
    before = server_versions(conn, [r.address for r in plan.roles])
    by_id = {r.node_id: ServerVersion.from_text(before.get(r.address) or "") for r in plan.roles}
    return replace(prep, plan=plan, refusals=prep.refusals + order_refusals(plan, by_id)), before


def show_versions(r: Renderer, before: dict[str, str | None], after: dict[str, str | None] | None) -> dict:
    rows = [(a, before[a] or "unreachable", "-" if after is None else after.get(a) or "unreachable") for a in before]
    r.table("server versions", ("node", "before", "after"), rows)
    return {a: {"before": b, "after": None if after is None else after.get(a)} for a, b in before.items()}
