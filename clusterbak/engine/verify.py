"""Re-read every file of a backup set: stored sha256, decompression, RDB structure and CRC64, raw sha256."""

from __future__ import annotations

from pathlib import Path

from clusterbak.errors import ClusterbakError
from clusterbak.rdb.verify import RdbVerifier
from clusterbak.storage.sink import hash_file, iter_stored_file


def verify_set(path: Path, manifest: dict) -> list[dict]:
    """One result per file: {file, ok, problem}. Never raises for a bad file; the caller decides."""
    results = []
    for shard in manifest["shards"]:
        f = shard["file"]
        results.append(_check(path / f["path"], lambda p, f=f: _rdb(p, f)))
    for node in manifest["nodes"]:
        conf = node["nodes_conf"]
        results.append(_check(path / conf["path"], lambda p, c=conf: _plain(p, c)))
    return results


def _check(file: Path, fn) -> dict:
    try:
        if not file.is_file():
            return {"file": str(file), "ok": False, "problem": "missing"}
        fn(file)
        return {"file": str(file), "ok": True, "problem": None}
    except ClusterbakError as exc:
        return {"file": str(file), "ok": False, "problem": str(exc)}


def _plain(file: Path, record: dict) -> None:
    digest = hash_file(file)
    if digest != record["sha256"]:
        raise ClusterbakError(f"{file}: sha256 {digest[:16]}… does not match the manifest's {record['sha256'][:16]}…")


def _rdb(file: Path, record: dict) -> None:
    _plain(file, record)
    verifier = RdbVerifier(str(file))
    for chunk in iter_stored_file(file, record["compression"]):
        verifier.feed(chunk)
    report = verifier.finish()
    if report.sha256 != record["raw_sha256"]:
        raise ClusterbakError(f"{file}: decompressed sha256 does not match the manifest")
    if report.crc64_stored != record["crc64"]:
        raise ClusterbakError(f"{file}: CRC64 {report.crc64_stored} differs from the manifest's {record['crc64']}")
