"""The drill's scratch cluster as a lab: redis-server processes of the set's shape on free loopback ports, not formed
(the restore gives every node its nodes.conf), with an inventory; `remove()` stops exactly what it started.

engine/drill.py takes a factory of these (`lab_scratch_cluster`) from its caller instead of importing the lab."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clusterbak.lab import cluster
from clusterbak.lab.inventory import write_inventory
from clusterbak.lab.procs import free_base_port


@dataclass(frozen=True, slots=True)
class LabScratchCluster:
    lab: cluster.Lab

    @property
    def seed(self) -> str:
        return self.lab.seed

    @property
    def inventory(self) -> str:
        return self.lab.inventory

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(n.address for n in self.lab.nodes)

    def remove(self) -> None:
        where = Path(self.lab.dir)
        if cluster.load(where) is not None:
            cluster.down(where)


def lab_scratch_cluster(where: Path, masters: int, replicas: int, base_port: int | None = None) -> LabScratchCluster:
    """masters x (1 + replicas) nodes in `where`, masters first; base_port None: free ports."""
    lab = cluster.up(where, masters, replicas, base_port or free_base_port(masters * (1 + replicas)), form=False)
    # no stop_command: the restore stops these empty throwaway nodes with SHUTDOWN NOSAVE (a few ms) instead of a
    # `python -m clusterbak.lab.nodectl stop` per node (an interpreter each, at once: ~0.3 s of the drill's RTO)
    write_inventory(lab, ("restart", "start"))
    return LabScratchCluster(lab)
