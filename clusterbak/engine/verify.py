"""Re-read every file of a backup set: stored sha256, decompression, RDB structure and CRC64, raw sha256;
for AOF sets also the manifest's consistency and redis-check-aof on the reassembled directory.

The manifest comes from the validated reader (model.manifest): every name joined onto a directory here is a
checked relative name, and stored files are read through the set's repository (StoredSet: a local set opens
them through storage.backupset.set_file, no symlinks; an S3 set by checked key)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from clusterbak.errors import ClusterbakError, VerifyError
from clusterbak.model.manifest import AofRecord, Manifest, StoredFile
from clusterbak.rdb.verify import RdbVerifier
from clusterbak.storage.reader import verified_chunks
from clusterbak.storage.repository import StoredSet
from clusterbak.storage.stages import HashingRead


def verify_set(stored: StoredSet, manifest: Manifest) -> list[dict]:
    """One result per file: {file, ok, problem[, note]}. Never raises for a bad file; the caller decides.
    An encrypted file without the set's identity gets its stored bytes checked only (the note says so)."""
    jobs = []
    for shard in manifest.shards:
        if shard.aof is not None:
            jobs.append(lambda a=shard.aof: _aof_shard(stored, a))
        elif shard.file is not None:
            jobs.append(lambda f=shard.file: [_check(stored, f, _rdb)])
    for conf in manifest.node_confs:
        for record in (conf.file, *conf.secret_files):  # nodes.conf, config file, users
            jobs.append(lambda f=record: [_check(stored, f, None)])
    # shards at once: sha256 and zstd release the GIL, so this uses every core; results keep manifest order
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        return [r for rows in pool.map(lambda job: job(), jobs) for r in rows]


def check_file(stored: StoredSet, record: StoredFile, rdb: bool, into=None) -> dict:
    """verify_set's check of one stored file ({file, ok, problem}); rdb: also its RDB structure and CRC64. With
    `into` (a writable binary file) the original bytes are written there as they stream: one read both checks and
    places a file (restore-keys). An encrypted file is then decrypted or fails: its bytes are needed."""
    if into is not None and record.encryption != "none" and not stored.identities:
        return {"file": stored.label(record.path), "ok": False, "problem": "encrypted: give --identity FILE to read it"}
    return _check(stored, record, _rdb if rdb else None, into)


def _check(stored: StoredSet, record: StoredFile, fn, into=None) -> dict:
    label = stored.label(record.path)
    try:
        size = stored.size(record.path)
        if size is None:
            return {"file": label, "ok": False, "problem": "missing"}
        if size != record.stored_size:
            return {"file": label, "ok": False,
                    "problem": f"{'truncated' if size < record.stored_size else 'too long'} "
                               f"({size} of {record.stored_size} bytes)"}
        if record.encryption != "none" and not stored.identities:
            _stored_only(stored, record)
            return {"file": label, "ok": True, "problem": None,
                    "note": "stored sha256 ok; content not decrypted (no --identity)"}
        chunks = verified_chunks(stored, record, "does not match the manifest", "")
        if into is not None:
            chunks = _written(chunks, into)
        if fn is None:
            for _ in chunks:
                pass
        else:
            fn(label, chunks, record)
        return {"file": label, "ok": True, "problem": None}
    except ClusterbakError as exc:  # the result names the file once: callers print "file: problem"
        return {"file": label, "ok": False, "problem": str(exc).removeprefix(f"{label}: ")}


def _written(chunks, into):
    for chunk in chunks:
        into.write(chunk)
        yield chunk


def _stored_only(stored: StoredSet, record: StoredFile) -> None:
    counted = HashingRead(stored.open(record.path))
    while counted.read(1 << 20):
        pass
    if counted.size != record.stored_size or counted.sha.hexdigest() != record.sha256:
        raise VerifyError(f"sha256 {counted.sha.hexdigest()[:16]}… of the stored bytes does not match the "
                          f"manifest's {record.sha256[:16]}…")


def _rdb(label: str, chunks, record: StoredFile) -> None:
    verifier = RdbVerifier(label)
    for chunk in chunks:
        verifier.feed(chunk)
    report = verifier.finish()
    if report.crc64_stored != record.crc64:
        raise VerifyError(f"CRC64 {report.crc64_stored} differs from the manifest's {record.crc64}")


def _aof_shard(path: StoredSet, aof: AofRecord) -> list[dict]:
    results = [_check(path, f, _rdb if (f.name or "").endswith(".rdb") else None) for f in aof.files]
    if aof.manifest_text is not None and aof.manifest_name is not None and all(r["ok"] for r in results):
        results.append(_check_aof_tool(path, aof))
    return results


def _check_aof_tool(path: StoredSet, aof: AofRecord) -> dict:
    """redis-check-aof on the reassembled directory, when the binary is present. Names were checked by the manifest
    reader (bare names); files are still created with O_EXCL|O_NOFOLLOW inside a private temp dir."""
    label = path.label(aof.folder) + " (redis-check-aof)"
    tool = shutil.which("redis-check-aof")
    if tool is None or (any(f.encryption != "none" for f in aof.files) and not path.identities):
        why = "redis-check-aof not installed" if tool is None else "content not decrypted (no --identity)"
        return {"file": label, "ok": True, "problem": None, "note": f"{why}: skipped"}
    with tempfile.TemporaryDirectory(prefix="clusterbak-aof-") as tmp:
        for f in aof.files:
            with _create(Path(tmp), f.name or "") as out:
                for chunk in verified_chunks(path, f, "does not match the manifest", ""):
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
