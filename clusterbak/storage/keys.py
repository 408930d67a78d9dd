"""Key files the operator gives: age recipients/identities (encryption) and Ed25519 keys (signed manifests).

A manifest's signature is Ed25519 over the exact bytes of manifest.json, stored beside it as manifest.json.sig
(base64 of the 64-byte signature). Keys are PEM (PKCS#8 private, SubjectPublicKeyInfo public), the format
`openssl genpkey -algorithm ed25519` writes, so openssl can make and check them too (docs/object-storage.md).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pyrage
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from clusterbak.errors import UsageError, VerifyError

AGE_RECIPIENT = re.compile(r"age1[02-9ac-hj-np-z]{58}")
SIGNATURE_SUFFIX = ".sig"


def check_recipients(values: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """`--encrypt-to` values: age X25519 recipients (public keys), checked before any work starts."""
    out = []
    for value in values:
        value = value.strip()
        if not AGE_RECIPIENT.fullmatch(value):
            raise UsageError(f"--encrypt-to {value!r} is not an age recipient (age1..., from `clusterbak keys "
                             "generate` or `age-keygen -y IDENTITY_FILE`)")
        try:
            pyrage.x25519.Recipient.from_str(value)
        except Exception as exc:  # noqa: BLE001
            raise UsageError(f"--encrypt-to {value!r} is not a valid age recipient: {exc}") from exc
        out.append(value)
    return tuple(dict.fromkeys(out))


def load_identities(path: str | None) -> tuple:
    """age identities from an identity file (age-keygen's format: AGE-SECRET-KEY-1... lines, # comments)."""
    if not path:
        return ()
    text = _read_key_file(path, "--identity")
    found = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            found.append(pyrage.x25519.Identity.from_str(line))
        except Exception:  # noqa: BLE001 - never echo a line of a secret key file
            raise UsageError(f"--identity {path}: a line is not an age identity (AGE-SECRET-KEY-1...)") from None
    if not found:
        raise UsageError(f"--identity {path} holds no age identity (AGE-SECRET-KEY-1... line)")
    return tuple(found)


def _read_key_file(path: str, flag: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError:
        raise UsageError(f"{flag} {path}: not a text key file") from None


@dataclass(frozen=True)
class Signer:
    key: Ed25519PrivateKey
    source: str

    def sign(self, data: bytes) -> bytes:
        return base64.b64encode(self.key.sign(data)) + b"\n"

    def public_pem(self) -> str:
        return self.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_signer(path: str | None) -> Signer | None:
    if not path:
        return None
    try:
        key = serialization.load_pem_private_key(_read_key_file(path, "--sign-key").encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--sign-key {path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"--sign-key {path}: not an Ed25519 key (make one with `clusterbak keys generate`)")
    return Signer(key, path)


def load_verify_key(path: str | None) -> Ed25519PublicKey | None:
    if not path:
        return None
    try:
        key = serialization.load_pem_public_key(_read_key_file(path, "--verify-key").encode())
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--verify-key {path}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UsageError(f"--verify-key {path}: not an Ed25519 public key")
    return key


def check_signature(key: Ed25519PublicKey, manifest: bytes, signature: bytes | None, where: str) -> None:
    """Exit 4 unless `signature` (manifest.json.sig) is the key's signature of exactly these manifest bytes."""
    if signature is None:
        raise VerifyError(f"{where}/manifest.json is not signed (no manifest.json{SIGNATURE_SUFFIX}) and --verify-key "
                          "was given: refusing the set")
    try:
        key.verify(base64.b64decode(signature.strip(), validate=True), manifest)
    except (InvalidSignature, binascii.Error, ValueError):
        raise VerifyError(f"{where}/manifest.json: the signature does not match --verify-key (the manifest was "
                          "changed, or signed by another key): refusing the set") from None


def generate(out_dir: str) -> dict:
    """A signing key pair and an age identity in out_dir (secrets 0600, created with O_EXCL: never overwritten)."""
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    sign = Ed25519PrivateKey.generate()
    identity = pyrage.x25519.Identity.generate()
    recipient = str(identity.to_public())
    files = {
        "signing_key": (directory / "signing-key.pem", sign.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), 0o600),
        "verify_key": (directory / "verify-key.pem", sign.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), 0o644),
        "identity": (directory / "age-identity.txt",
                     f"# public key: {recipient}\n{identity}\n".encode(), 0o600),
    }
    for path, _data, _mode in files.values():
        if path.exists():
            raise UsageError(f"{path} already exists; keys are never overwritten (choose another --out)")
    for path, data, mode in files.values():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
    return {"recipient": recipient, **{name: str(path) for name, (path, _, _) in files.items()}}
