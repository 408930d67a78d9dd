"""Re-read every file of a backup set: stored sha256, decompression, RDB structure and CRC64, raw sha256;
for AOF sets also the manifest's consistency and redis-check-aof on the reassembled directory.

The manifest comes from the validated reader (model.manifest): every name joined onto a directory here is a
checked relative name, and stored files are opened through storage.backupset.set_file (no symlinks)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from clusterbak.errors import ClusterbakError, VerifyError
from clusterbak.model.manifest import AofRecord, Manifest, StoredFile
from clusterbak.rdb.verify import RdbVerifier
from clusterbak.storage.backupset import set_file
from clusterbak.storage.sink import hash_file, iter_stored_file


def verify_set(path: Path, manifest: Manifest) -> list[dict]:
    """One result per file: {file, ok, problem}. Never raises for a bad file; the caller decides."""
    jobs = []
    for shard in manifest.shards:
        if shard.aof is not None:
            jobs.append(lambda a=shard.aof: _aof_shard(path, a))
        elif shard.file is not None:
            jobs.append(lambda f=shard.file: [_check(path, f, _rdb)])
    for conf in manifest.node_confs:
        for record in (conf.file, *conf.secret_files):  # nodes.conf, config file, users
            jobs.append(lambda f=record: [_check(path, f, _plain)])
    # shards at once: sha256 and zstd release the GIL, so this uses every core; results keep manifest order
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        return [r for rows in pool.map(lambda job: job(), jobs) for r in rows]


def _check(set_dir: Path, record: StoredFile, fn) -> dict:
    label = str(set_dir / record.path)
    try:
        file = set_file(set_dir, record.path)
        if not file.is_file():
            return {"file": label, "ok": False, "problem": "missing"}
        size = file.stat().st_size
        if size != record.stored_size:
            return {"file": label, "ok": False,
                    "problem": f"{'truncated' if size < record.stored_size else 'too long'} "
                               f"({size} of {record.stored_size} bytes)"}
        fn(file, record)
        return {"file": label, "ok": True, "problem": None}
    except ClusterbakError as exc:  # the result names the file once: callers print "file: problem"
        return {"file": label, "ok": False, "problem": str(exc).removeprefix(f"{label}: ")}


def _plain(file: Path, record: StoredFile) -> None:
    digest = hash_file(file)
    if digest != record.sha256:
        raise VerifyError(f"sha256 {digest[:16]}… does not match the manifest's {record.sha256[:16]}…")


def _rdb(file: Path, record: StoredFile) -> None:
    _plain(file, record)
    verifier = RdbVerifier(str(file))
    for chunk in iter_stored_file(file, record.compression):
        verifier.feed(chunk)
    report = verifier.finish()
    if report.sha256 != record.raw_sha256:
        raise VerifyError("decompressed sha256 does not match the manifest")
    if report.crc64_stored != record.crc64:
        raise VerifyError(f"CRC64 {report.crc64_stored} differs from the manifest's {record.crc64}")


def _raw(file: Path, record: StoredFile) -> None:
    _plain(file, record)
    digest = hashlib.sha256()
    for chunk in iter_stored_file(file, record.compression):
        digest.update(chunk)
    if digest.hexdigest() != record.raw_sha256:
        raise VerifyError("decompressed sha256 does not match the manifest")


def _aof_shard(path: Path, aof: AofRecord) -> list[dict]:
    results = [_check(path, f, _rdb if (f.name or "").endswith(".rdb") else _raw) for f in aof.files]
    if aof.manifest_text is not None and aof.manifest_name is not None and all(r["ok"] for r in results):
        results.append(_check_aof_tool(path, aof))
    return results


def _check_aof_tool(path: Path, aof: AofRecord) -> dict:
    """redis-check-aof on the reassembled directory, when the binary is present. Names were checked by the manifest
    reader (bare names); files are still created with O_EXCL|O_NOFOLLOW inside a private temp dir."""
    label = str(path / aof.folder) + " (redis-check-aof)"
    tool = shutil.which("redis-check-aof")
    if tool is None:
        return {"file": label, "ok": True, "problem": None, "note": "redis-check-aof not installed: skipped"}
    with tempfile.TemporaryDirectory(prefix="clusterbak-aof-") as tmp:
        for f in aof.files:
            with _create(Path(tmp), f.name or "") as out:
                for chunk in iter_stored_file(set_file(path, f.path), f.compression):
                    out.write(chunk)
        with _create(Path(tmp), aof.manifest_name or "") as out:
            out.write((aof.manifest_text or "").encode())
        run = subprocess.run([tool, str(Path(tmp) / (aof.manifest_name or ""))], capture_output=True, text=True,
                             timeout=600)
    ok = run.returncode == 0
    return {"file": label, "ok": ok, "problem": None if ok else (run.stdout + run.stderr).strip().splitlines()[-1]}


def _create(directory: Path, name: str):
    if not name or "/" in name or name.startswith("."):
        raise VerifyError(f"refusing to create {name!r} in {directory}")
    fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    return os.fdopen(fd, "wb")
