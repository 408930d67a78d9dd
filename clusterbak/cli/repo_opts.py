"""Options of the commands that take --dest: where sets live (a directory or s3://bucket/prefix), S3 settings, and
the keys for encryption and signed manifests (docs/object-storage.md)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Annotated

import typer

from clusterbak.errors import UsageError
from clusterbak.storage.keys import check_recipients, load_identities, load_signer, load_verify_key
from clusterbak.storage.repository import Repository, open_repository
from clusterbak.storage.s3options import LOCK_MODES, S3Options, parse_s3_url
from clusterbak.storage.stages import Encryption

Endpoint = Annotated[str | None, typer.Option(
    "--s3-endpoint-url", envvar="AWS_ENDPOINT_URL",
    help="S3-compatible endpoint (MinIO, Ceph RGW, ...); default: AWS. Credentials/region: the standard AWS chain.")]
PathStyle = Annotated[bool, typer.Option(
    "--s3-path-style", envvar="CLUSTERBAK_S3_PATH_STYLE", help="Path-style S3 addressing (http://host/bucket/key).")]
PartMb = Annotated[int, typer.Option("--s3-part-size-mb", min=5, max=5120, help="Multipart upload part size.")]
Concurrency = Annotated[int, typer.Option("--s3-concurrency", min=1, max=32,
                                          help="Parts uploaded at once per file (memory: part size x (this + 1)).")]
EncryptTo = Annotated[list[str] | None, typer.Option(
    "--encrypt-to", envvar="CLUSTERBAK_ENCRYPT_TO",
    help="age recipient (age1...) to encrypt every stored file to; repeatable.")]
SignKey = Annotated[str | None, typer.Option(
    "--sign-key", envvar="CLUSTERBAK_SIGN_KEY", help="Ed25519 private key (PEM) that signs the manifest.")]
Identity = Annotated[str | None, typer.Option(
    "--identity", envvar="CLUSTERBAK_IDENTITY", help="age identity file that decrypts an encrypted set.")]
VerifyKey = Annotated[str | None, typer.Option(
    "--verify-key", envvar="CLUSTERBAK_VERIFY_KEY",
    help="Ed25519 public key (PEM): refuse a set whose manifest is not signed by it.")]


LockDays = Annotated[int, typer.Option(
    "--lock-days", min=0, help="S3 Object Lock: every object of the set is retained N days (the bucket must have "
    "Object Lock enabled); prune keeps a locked set.")]
LockMode = Annotated[str, typer.Option(
    "--lock-mode", help="With --lock-days: governance (a user with s3:BypassGovernanceRetention may still delete) "
    "or compliance (nobody can, not even the root account, until the date).")]


def repository(dest: str, endpoint: str | None, path_style: bool, part_mb: int = 5, concurrency: int = 2,
               writing: bool = False, lock_days: int = 0, lock_mode: str = "governance") -> Repository:
    """The repository --dest names, checked first: a missing bucket or refused credentials is exit 3 naming the
    fix (for backup: before any BGSAVE), never a half-run command."""
    if lock_mode not in LOCK_MODES:
        raise UsageError(f"--lock-mode {lock_mode}: use governance or compliance")
    if lock_days and not is_remote(dest):
        raise UsageError("--lock-days needs an s3:// --dest (Object Lock is an S3 feature)")
    repo = open_repository(dest, S3Options(endpoint_url=endpoint, path_style=path_style,
                                           part_size=part_mb * 1024 * 1024, concurrency=concurrency,
                                           lock_days=lock_days, lock_mode=lock_mode))
    repo.check(writing)
    return repo


def repository_soon(dest: str, endpoint: str | None, path_style: bool, part_mb: int = 5, concurrency: int = 2,
                    writing: bool = False, lock_days: int = 0,
                    lock_mode: str = "governance") -> Callable[[], Repository]:
    """repository(), for a command that reads the cluster before it writes: an s3:// repository is opened and checked
    on a thread of its own (importing boto3 and loading its service models is ~0.3-0.6 s of a backup) while the
    caller reads the cluster; calling the result waits for it and raises what the check raised (exit 3 for a missing
    bucket or refused credentials, still before any BGSAVE). Flag and URL errors are raised now; a local directory
    is opened and checked now."""
    if lock_mode not in LOCK_MODES:
        raise UsageError(f"--lock-mode {lock_mode}: use governance or compliance")
    if not is_remote(dest):
        repo = repository(dest, endpoint, path_style, part_mb, concurrency, writing, lock_days, lock_mode)
        return lambda: repo
    parse_s3_url(dest)
    done: dict = {}

    def run() -> None:
        try:
            done["repo"] = repository(dest, endpoint, path_style, part_mb, concurrency, writing, lock_days, lock_mode)
        except BaseException as exc:  # noqa: BLE001 - raised to the caller when it asks for the repository
            done["error"] = exc

    thread = threading.Thread(target=run, name="s3-open", daemon=True)
    thread.start()

    def wait() -> Repository:
        thread.join()
        if "error" in done:
            raise done["error"]
        return done["repo"]

    return wait


def is_remote(dest: str) -> bool:
    return dest.startswith("s3://")


def encryption(recipients: list[str] | None) -> Encryption | None:
    checked = check_recipients(recipients or [])
    return Encryption(checked) if checked else None


def opened(repo: Repository, backup_id: str, verify_key: str | None, identity: str | None):
    """(manifest, stored set): the signature checked first (exit 4 before anything is touched), then the one
    validated reader, then the set opened with the identities that decrypt it."""
    key = load_verify_key(verify_key)
    identities = load_identities(identity)
    manifest = repo.manifest(backup_id, key)
    return manifest, repo.open_set(backup_id, identities)


__all__ = [
    "is_remote",
    "Endpoint",
    "PathStyle",
    "PartMb",
    "Concurrency",
    "EncryptTo",
    "SignKey",
    "Identity",
    "VerifyKey",
    "LockDays",
    "LockMode",
    "repository",
    "encryption",
    "opened",
    "load_signer",
]
