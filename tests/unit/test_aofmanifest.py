import pytest

from clusterbak.model.aofmanifest import (
    AofFile,
    AofManifestError,
    needed,
    parse_aof_manifest,
    rename_prefix,
    render_manifest,
)

TEXT = """file appendonly.aof.2.base.rdb seq 2 type b
file appendonly.aof.1.incr.aof seq 1 type h
file appendonly.aof.3.incr.aof seq 3 type i
file appendonly.aof.2.incr.aof seq 2 type i
"""


def test_parse_and_needed_files_in_load_order():
    files = parse_aof_manifest(TEXT)
    assert [f.name for f in needed(files)] == ["appendonly.aof.2.base.rdb", "appendonly.aof.2.incr.aof",
                                               "appendonly.aof.3.incr.aof"]


def test_round_trip_and_prefix_rename():
    files = needed(parse_aof_manifest(TEXT))
    assert parse_aof_manifest(render_manifest(files)) == files
    renamed = rename_prefix(files, "appendonly.aof", "node7.aof")
    assert renamed[0] == AofFile("node7.aof.2.base.rdb", 2, "b")


@pytest.mark.parametrize("bad", ["file x seq 1", "file x seq one type b", "file x seq 1 type z",
                                 "file a seq 1 type b\nfile b seq 2 type b"])
def test_bad_manifests(bad):
    with pytest.raises(AofManifestError):
        parse_aof_manifest(bad)
