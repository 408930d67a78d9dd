"""`unpin`: put back the settings an interrupted AOF backup left pinned, from this control host's pin records."""

from __future__ import annotations

from clusterbak.errors import PreconditionError
from clusterbak.model.topology import Topology
from clusterbak.redisops.aofrewrite import SettingsNotRestored, put_back
from clusterbak.redisops.connect import ConnectionOptions, make_client, redis_errors
from clusterbak.storage.pins import PinRecord, read_pin


def pinned(topology: Topology) -> list[PinRecord]:
    """The pin records this control host holds for the cluster's nodes."""
    return [rec for rec in (read_pin(n.address) for n in topology.nodes) if rec is not None]


def put_back_pins(conn: ConnectionOptions, records: list[PinRecord]) -> tuple[list[str], list[str]]:
    """Set each record's original settings again: (addresses restored, one error line per node that was not)."""
    restored, errors = [], []
    for rec in records:
        host, port = rec.address.rsplit(":", 1)
        client = make_client(conn, host, int(port))
        try:
            with redis_errors(rec.address, conn):
                put_back(client, rec.address, rec.originals)
            restored.append(rec.address)
        except (SettingsNotRestored, PreconditionError) as exc:
            errors.append(str(exc))
        finally:
            client.close()
    return restored, errors
