"""Hand-made manifest documents for pure tests: a valid one to start from, crafted ones are edits of it."""

from __future__ import annotations

import copy

M = "a" * 40
R = "b" * 40
SHA = "0" * 64

VALID = {
    "format": 1, "kind": "rdb", "backup_id": "b1", "created_at_unix": 1_700_000_000.0, "seed": "10.0.0.1:6379",
    "topology": {"nodes": [
        {"id": M, "address": "10.0.0.1:6379", "role": "master", "master_id": None, "slots": ["0-16383"]},
        {"id": R, "address": "10.0.0.2:6379", "role": "replica", "master_id": M, "slots": []},
    ]},
    "config": {"10.0.0.1:6379": {"dir": "/elsewhere/$(touch /tmp/injected)", "dbfilename": "x.rdb",
                                 "cluster-config-file": "/etc/hostname"}},
    "shards": [{"index": 0, "slots": ["0-16383"], "master": {"id": M, "address": "10.0.0.1:6379"},
                "source": {"id": R, "address": "10.0.0.2:6379"}, "save": {"requested_at": 1_700_000_000.0},
                "rdb": {"version": 10, "keys": 5, "expires": 1},
                "file": {"path": "shard-00.rdb.zst", "sha256": SHA, "raw_sha256": SHA, "stored_size": 10,
                         "raw_size": 20, "crc64": "0" * 16, "compression": "zstd"}}],
    "nodes": [{"id": M, "address": "10.0.0.1:6379", "role": "master",
               "nodes_conf": {"path": "nodes/m.conf", "sha256": SHA, "size": 3}},
              {"id": R, "address": "10.0.0.2:6379", "role": "replica",
               "nodes_conf": {"path": "nodes/r.conf", "sha256": SHA, "size": 3}}],
    "totals": {"keys": 5, "raw_bytes": 20, "stored_bytes": 10},
}


def doc() -> dict:
    return copy.deepcopy(VALID)
