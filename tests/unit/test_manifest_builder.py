"""What backup writes is what the reader reads: a manifest built with model/manifest.py's builder, for the 3x1
golden topology, parses back into the same values (RDB and AOF), and its JSON is a golden file."""

from __future__ import annotations

import json

from clusterbak.model.manifest import (
    SaveTimes,
    WrittenFile,
    aof_file_record,
    aof_folder_record,
    aof_shard_record,
    manifest_record,
    node_record,
    parse_manifest,
    rdb_file_record,
    rdb_shard_record,
)
from clusterbak.plan.backup import BackupPlan, plan_backup
from tests.unit.test_plan_rolling import inventory, states, topo

BACKUP_ID = "20260101T000000Z-ab12"
T0 = 1_790_000_000.0


def sha(i: int) -> str:
    return f"{i:064x}"


def built(plan: BackupPlan, kind: str) -> dict:
    t = topo("nodes_3x1.txt")
    shards = []
    for s in plan.shards:
        assert s.source_id is not None
        save = SaveTimes(T0 + s.index, T0 + s.index + 1.25, 1.25)
        if kind == "rdb":
            file = WrittenFile(f"shard-{s.index:02d}-{s.source_id[:8]}.rdb.zst", s.rdb_path or "", 1000 + s.index,
                               400 + s.index, sha(s.index), sha(100 + s.index), "zstd")
            shards.append(rdb_shard_record(
                s.header(), master_replid="r" * 40, master_repl_offset=5000, source_replid="r" * 40,
                source_repl_offset=5000, save=save,
                save_details={"scheduled": False, "rdb_last_cow_size": 4096 * (s.index + 1)},
                rdb={"version": 11, "keys": 10 * (s.index + 1), "expires": s.index, "dbs": []},
                file=rdb_file_record(file, f"{s.index:016x}", False), transfer_seconds=0.5,
                timings={"bgsave_s": 1.25, "transfer_s": 0.5}))
        else:
            folder = f"shard-{s.index:02d}-{s.source_id[:8]}.aof"
            file = WrittenFile(f"{folder}/appendonly.aof", "/data/appendonly.aof", 2000, 2000, sha(s.index),
                               sha(s.index), "none")
            aof = aof_folder_record(None, "appendonly.aof", None, None, folder,
                                    [aof_file_record(file, "appendonly.aof", "single", 0, 0.25)])
            shards.append(aof_shard_record(s.header(), rewrite={"duration_s": 1.25}, save=save,
                                           keys=10 * (s.index + 1), expires=0, aof=aof))
    nodes = [node_record(nf.node_id, nf.address, nf.role, f"nodes/{nf.address.replace(':', '_')}.conf",
                         nf.nodes_conf_path or "", 300, sha(200 + i)) for i, nf in enumerate(plan.node_files)]
    return manifest_record(kind=kind, backup_id=plan.backup_id, created=T0 + 10, started=T0, version="0.0.0",
                           seed=t.nodes[0].address, source_mode=plan.source_mode, topology=t, states=states(t),
                           shards=shards, nodes=nodes, timings={"shards_s": 8.0, "node_files_s": 2.0},
                           warnings=[], incomplete=[])


def plan(aof: bool = False) -> BackupPlan:
    t = topo("nodes_3x1.txt")
    info = {n.address: {"aof_enabled": 1} for n in t.nodes} if aof else {}
    p = plan_backup(BACKUP_ID, t, states(t, **info), inventory(t), aof=aof)
    assert p.ok
    return p


def test_an_rdb_manifest_built_by_the_builder_reads_back():
    p = plan()
    doc = json.loads(json.dumps(built(p, "rdb")))  # as stored
    m = parse_manifest(doc, "sets/" + BACKUP_ID, expect_id=BACKUP_ID)
    assert m.kind == "rdb" and m.backup_id == BACKUP_ID and m.created_at_unix == T0 + 10
    assert [s.index for s in m.shards] == [s.index for s in p.shards]
    for read, planned in zip(m.shards, p.shards, strict=True):
        assert (read.master_id, read.master_address, read.source_id, read.source_address, read.slots) == (
            planned.master_id, planned.master_address, planned.source_id, planned.source_address, planned.slots)
        assert read.requested_at == T0 + planned.index and read.keys == 10 * (planned.index + 1)
        assert read.rdb_version == 11 and read.cow_bytes == 4096 * (planned.index + 1)
        assert read.file is not None and read.file.sha256 == sha(planned.index)
        assert read.file.raw_sha256 == sha(100 + planned.index) and read.file.compression == "zstd"
        assert read.file.crc64 == f"{planned.index:016x}" and read.file.raw_size == 1000 + planned.index
        assert read.timings is not None and dict(read.timings) == {"bgsave_s": 1.25, "transfer_s": 0.5}
    assert {c.id for c in m.node_confs} == {n.node_id for n in topo("nodes_3x1.txt").nodes}
    assert m.keys == sum(s.keys for s in m.shards) and m.raw_bytes == sum(f.raw_size or 0 for f in m.stored_files()
                                                                          if f.raw_size is not None)
    assert m.stored_bytes == sum(400 + s.index for s in p.shards)


def test_an_aof_manifest_built_by_the_builder_reads_back():
    p = plan(aof=True)
    m = parse_manifest(json.loads(json.dumps(built(p, "aof"))), "sets/" + BACKUP_ID)
    assert m.kind == "aof"
    for read in m.shards:
        assert read.aof is not None and read.file is None
        assert [f.name for f in read.files] == ["appendonly.aof"] and read.files[0].type == "single"
        assert read.keys == 10 * (read.index + 1) and read.rdb_version is None


def test_the_rdb_manifest_of_3x1_matches_its_golden(golden):
    golden("manifest_3x1.json", json.dumps(built(plan(), "rdb"), indent=2, sort_keys=True) + "\n")
