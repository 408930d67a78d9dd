"""Re-read every file of a backup set: stored sha256, decompression, RDB structure and CRC64, raw sha256;
for AOF sets also the manifest's consistency and redis-check-aof on the reassembled directory."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from clusterbak.errors import ClusterbakError
from clusterbak.model.aofmanifest import AofManifestError, needed, parse_aof_manifest
from clusterbak.rdb.verify import RdbVerifier
from clusterbak.storage.sink import hash_file, iter_stored_file


def verify_set(path: Path, manifest: dict) -> list[dict]:
    """One result per file: {file, ok, problem}. Never raises for a bad file; the caller decides."""
    jobs = []
    for shard in manifest["shards"]:
        if "aof" in shard:
            jobs.append(lambda a=shard["aof"]: _aof_shard(path, a))
        else:
            jobs.append(lambda f=shard["file"]: [_check(path / f["path"], lambda p: _rdb(p, f))])
    for node in manifest["nodes"]:
        jobs.append(lambda c=node["nodes_conf"]: [_check(path / c["path"], lambda p: _plain(p, c))])
    # shards at once: sha256 and zstd release the GIL, so this uses every core; results keep manifest order
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        return [r for rows in pool.map(lambda job: job(), jobs) for r in rows]


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


def _raw(file: Path, record: dict) -> None:
    _plain(file, record)
    digest = hashlib.sha256()
    for chunk in iter_stored_file(file, record["compression"]):
        digest.update(chunk)
    if digest.hexdigest() != record["raw_sha256"]:
        raise ClusterbakError(f"{file}: decompressed sha256 does not match the manifest")


def _aof_shard(path: Path, aof: dict) -> list[dict]:
    results = [_check(path / f["path"], (lambda p, f=f: _rdb(p, f)) if f["name"].endswith(".rdb")
                      else (lambda p, f=f: _raw(p, f))) for f in aof["files"]]
    if aof.get("manifest_text") is not None:
        folder = path / aof["folder"]
        try:
            named = [f.name for f in needed(parse_aof_manifest(aof["manifest_text"]))]
            have = [f["name"] for f in aof["files"]]
            problem = None if named == have else f"AOF manifest names {named}, the set holds {have}"
        except AofManifestError as exc:
            problem = str(exc)
        results.append({"file": str(folder / aof["manifest_name"]), "ok": problem is None, "problem": problem})
        if problem is None and all(r["ok"] for r in results):
            results.append(_check_aof_tool(path, aof))
    return results


def _check_aof_tool(path: Path, aof: dict) -> dict:
    """redis-check-aof on the reassembled directory, when the binary is present."""
    label = str(path / aof["folder"]) + " (redis-check-aof)"
    tool = shutil.which("redis-check-aof")
    if tool is None:
        return {"file": label, "ok": True, "problem": None, "note": "redis-check-aof not installed: skipped"}
    with tempfile.TemporaryDirectory(prefix="clusterbak-aof-") as tmp:
        for f in aof["files"]:
            with open(Path(tmp) / f["name"], "wb") as out:
                for chunk in iter_stored_file(path / f["path"], f["compression"]):
                    out.write(chunk)
        (Path(tmp) / aof["manifest_name"]).write_text(aof["manifest_text"])
        run = subprocess.run([tool, str(Path(tmp) / aof["manifest_name"])], capture_output=True, text=True, timeout=600)
    ok = run.returncode == 0
    return {"file": label, "ok": ok, "problem": None if ok else (run.stdout + run.stderr).strip().splitlines()[-1]}
