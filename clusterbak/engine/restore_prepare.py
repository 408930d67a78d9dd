"""A restore before its plan runs: the set verified, the targets probed where the operator said, the plan made.

`restore` and `drill` both start here, so what they check and how they probe is one code path; the CLI renders
the plan, asks, and hands it to engine/restore.py's `run_restore`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from clusterbak.engine.node_extras import stored_configs, with_current_config
from clusterbak.engine.restore import verify_or_refuse
from clusterbak.errors import PreconditionError
from clusterbak.model.inventory import Inventory
from clusterbak.model.manifest import Manifest
from clusterbak.model.nodesconf import NewAddress
from clusterbak.plan.restore import RestorePlan, plan_restore, target_address
from clusterbak.redisops.connect import ConnectionOptions
from clusterbak.redisops.target import probe_target
from clusterbak.storage.repository import StoredSet


@dataclass(frozen=True, slots=True)
class PreparedRestore:
    plan: RestorePlan
    conn: ConnectionOptions  # how to reach the targets (seeded at the first one the inventory lists)


def prepare_restore(set_dir: StoredSet, manifest: Manifest, inventory: Inventory, mapping: dict[str, NewAddress],
                    connect: Callable[[str], ConnectionOptions], *, force: bool = False, with_config: bool = False,
                    with_acl: bool = False, accept_new_host_keys: bool = False,
                    verify: bool = True) -> PreparedRestore:
    """Verify the set (before anything is touched, even for a dry run; `verify=False` when the caller already
    did), probe each target and plan. Only addresses the operator named are probed: a set's addresses go through
    `mapping` (--map) and the inventory first, and one the inventory does not list is never connected to (the plan
    refuses it instead). `connect(seed)`: connection options seeded at a target."""
    if verify:
        verify_or_refuse(set_dir, manifest)
    wanted = [target_address(manifest, mapping, n.address).address for n in manifest.nodes]
    listed = inventory.addresses()
    placed = [a for a in wanted if a in listed]
    if not placed:
        raise PreconditionError(f"no node of backup {manifest.backup_id} maps to a node of {inventory.source}; "
                                "check --inventory and --map")
    conn = connect(placed[0])
    targets = {address: probe_target(conn, address) for address in placed}
    stored = stored_configs(set_dir, manifest) if with_config else {}
    if with_config:
        targets = with_current_config(targets, inventory, accept_new_host_keys)
    plan = plan_restore(manifest, inventory, mapping, targets, force, with_config, with_acl, stored)
    return PreparedRestore(plan, conn)
