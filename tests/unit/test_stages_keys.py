"""The stream stages (zstd, age, hashes) and the key files, on a local repository: no server needed."""

from __future__ import annotations

import hashlib
import json
import os
import types

import pytest

from clusterbak.errors import PreconditionError, StepFailed, UsageError, VerifyError
from clusterbak.model.manifest import StoredFile
from clusterbak.storage import keys
from clusterbak.storage.local import LocalRepository
from clusterbak.storage.reader import VerifiedReader
from clusterbak.storage.repository import annotate
from clusterbak.storage.stages import Encryption


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    return keys.generate(str(tmp_path_factory.mktemp("keys") / "k")), keys.generate(
        str(tmp_path_factory.mktemp("keys2") / "k"))


def write_one(tmp_path, made, compress: str, payload: bytes):
    repo = LocalRepository(tmp_path / "sets")
    writer = repo.begin("20260101T000000Z-0001", Encryption((made[0]["recipient"],)))
    sink = writer.open_sink("blob.bin", compress)
    for i in range(0, len(payload), 100_000):
        sink.write(payload[i:i + 100_000])
    written = sink.close()
    record = StoredFile("blob.bin", written.sha256_stored, written.stored_size, compress,
                        hashlib.sha256(payload).hexdigest(), len(payload), encryption="age",
                        recipients=(made[0]["recipient"],))
    return repo, tmp_path / "sets" / "20260101T000000Z-0001.partial", record


class _Set:  # a StoredSet over the partial directory (the set is not committed in these tests)
    def __init__(self, root, identities):
        from clusterbak.storage.local import LocalStoredSet

        self._s = LocalStoredSet(root, identities)
        self.where, self.identities = self._s.where, identities

    def __getattr__(self, name):
        return getattr(self._s, name)


@pytest.mark.parametrize("compress", ["zstd", "none"])
def test_age_round_trip_streams_and_checks_both_hashes(tmp_path, made, compress):
    payload = os.urandom(3_000_000)
    _, root, record = write_one(tmp_path, made, compress, payload)
    assert (root / "blob.bin").read_bytes().startswith(b"age-encryption.org/v1\n")
    ours = keys.load_identities(made[0]["identity"])
    assert VerifiedReader(_Set(root, ours), record).read() == payload
    with pytest.raises(VerifyError, match="cannot decrypt"):
        VerifiedReader(_Set(root, keys.load_identities(made[1]["identity"])), record).read()
    with pytest.raises(PreconditionError, match="--identity"):
        VerifiedReader(_Set(root, ()), record).read()
    data = bytearray((root / "blob.bin").read_bytes())
    data[-100] ^= 1  # inside the last age chunk: its tag fails
    (root / "blob.bin").write_bytes(bytes(data))
    with pytest.raises(VerifyError):
        VerifiedReader(_Set(root, ours), record).read()


def test_a_signature_covers_the_exact_manifest_bytes(made):
    signer = keys.load_signer(made[0]["signing_key"])
    key = keys.load_verify_key(made[0]["verify_key"])
    data = b'{"format": 1}\n'
    sig = signer.sign(data)
    keys.check_signature(key, data, sig, "set")
    with pytest.raises(VerifyError, match="does not match"):
        keys.check_signature(key, data.replace(b"1", b"2"), sig, "set")
    with pytest.raises(VerifyError, match="does not match"):
        keys.check_signature(keys.load_verify_key(made[1]["verify_key"]), data, sig, "set")
    with pytest.raises(VerifyError, match="not signed"):
        keys.check_signature(key, data, None, "set")
    with pytest.raises(VerifyError, match="does not match"):
        keys.check_signature(key, data, b"not base64 at all!\n", "set")


def test_bad_key_material_is_a_usage_error_naming_the_flag(tmp_path, made):
    with pytest.raises(UsageError, match="--encrypt-to"):
        keys.check_recipients(["age1notakey"])
    with pytest.raises(UsageError, match="--sign-key"):
        keys.load_signer(made[0]["verify_key"])  # a public key where the private one belongs
    (tmp_path / "id.txt").write_text("# nothing here\n")
    with pytest.raises(UsageError, match="no age identity"):
        keys.load_identities(str(tmp_path / "id.txt"))
    with pytest.raises(UsageError, match="never overwritten"):
        keys.generate(os.path.dirname(made[0]["identity"]))
    assert oct(os.stat(made[0]["identity"]).st_mode & 0o777) == "0o600"


def test_annotate_records_encryption_and_refuses_unrecorded_or_different_files(tmp_path, made):
    _, _, record = write_one(tmp_path, made, "zstd", b"x" * 1000)
    repo = LocalRepository(tmp_path / "sets2")
    writer = repo.begin("20260101T000000Z-0002", Encryption((made[0]["recipient"],)))
    (writer / "nodes").mkdir()
    sink = writer.open_sink("nodes/a.conf", "none")
    sink.write(b"conf")
    done = sink.close()
    doc = {"nodes": [{"nodes_conf": {"path": "nodes/a.conf", "sha256": done.sha256_stored}}]}
    annotate(doc, writer.written)
    entry = doc["nodes"][0]["nodes_conf"]
    assert entry["encryption"]["recipients"] == [made[0]["recipient"]]
    assert entry["raw_sha256"] == hashlib.sha256(b"conf").hexdigest()
    assert "SECRET" not in json.dumps(doc)
    with pytest.raises(StepFailed, match="not recorded"):
        annotate({"nodes": []}, writer.written)
    with pytest.raises(StepFailed, match="sha256"):
        annotate({"x": {"path": "nodes/a.conf", "sha256": "0" * 64}}, writer.written)


class _CountingSha:
    """hashlib.sha256 stand-in that counts the bytes hashed through it."""

    fed = 0
    real = hashlib.sha256

    def __init__(self, data=b""):
        self._h = _CountingSha.real(data)

    def update(self, data):
        _CountingSha.fed += len(data)
        self._h.update(data)

    def hexdigest(self):
        return self._h.hexdigest()


@pytest.mark.parametrize("encrypted", [False, True])
def test_a_caller_that_hashes_the_raw_bytes_saves_the_sinks_plaintext_pass(tmp_path, made, monkeypatch, encrypted):
    """The backup's verifying sinks hash the raw bytes of a file the store transforms: with hashes_raw an encrypted
    file records that digest as its plaintext sha256 instead of the sink hashing the plaintext again (two passes per
    byte with age, not three). A file stored as it is is hashed by the sink as before: that is its raw hash."""
    from clusterbak.storage import stages

    payload = os.urandom(2_000_000)
    raw = hashlib.sha256(payload).hexdigest()
    monkeypatch.setattr(stages, "hashlib", types.SimpleNamespace(sha256=_CountingSha))
    _CountingSha.fed = 0
    repo = LocalRepository(tmp_path / "sets")
    writer = repo.begin("20260101T000000Z-0001", Encryption((made[0]["recipient"],)) if encrypted else None)
    sink = writer.open_sink("blob.bin", "none", hashes_raw=True)
    for i in range(0, len(payload), 100_000):
        sink.write(payload[i:i + 100_000])
    written = sink.close(raw_sha256=raw if encrypted else None)
    stored = (tmp_path / "sets" / "20260101T000000Z-0001.partial" / "blob.bin").read_bytes()
    assert written.sha256_stored == hashlib.sha256(stored).hexdigest()
    assert _CountingSha.fed == len(stored)  # the stored bytes only: the plaintext was not hashed a second time
    if encrypted:
        assert written.raw_sha256 == raw
    else:
        assert written.sha256_stored == raw


def test_an_encrypted_sink_told_the_caller_hashes_refuses_to_close_without_the_digest(tmp_path, made):
    repo = LocalRepository(tmp_path / "sets")
    writer = repo.begin("20260101T000000Z-0001", Encryption((made[0]["recipient"],)))
    sink = writer.open_sink("blob.bin", "none", hashes_raw=True)
    sink.write(b"x" * 1000)
    with pytest.raises(StepFailed, match="sha256 was not handed over"):
        sink.close()
    assert not (tmp_path / "sets" / "20260101T000000Z-0001.partial" / "blob.bin").exists()
