"""Redis 7 multi-part AOF manifest: `file <name> seq <n> type <b|h|i>` lines. Pure."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from clusterbak.errors import AofManifestError as AofManifestError  # raised here (exit 4, errors.py)

TYPES = {"b": "base", "h": "history", "i": "incr"}


@dataclass(frozen=True, slots=True)
class AofFile:
    name: str
    seq: int
    type: str  # b | h | i


def parse_aof_manifest(text: str) -> tuple[AofFile, ...]:
    files = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            parts = shlex.split(line)
        except ValueError as exc:  # an unbalanced quote
            raise AofManifestError(f"AOF manifest line cannot be split into fields ({exc}): {line!r}") from None
        if len(parts) % 2:
            raise AofManifestError(f"AOF manifest line has an odd number of fields: {line!r}")
        fields = dict(zip(parts[::2], parts[1::2], strict=False))
        try:
            files.append(AofFile(fields["file"], int(fields["seq"]), fields["type"]))
        except (KeyError, ValueError) as exc:
            raise AofManifestError(f"AOF manifest line lacks file/seq/type: {line!r}") from exc
        if files[-1].type not in TYPES:
            raise AofManifestError(f"AOF manifest line has unknown type {files[-1].type!r}: {line!r}")
    bases = [f for f in files if f.type == "b"]
    if len(bases) > 1:
        raise AofManifestError("AOF manifest names more than one base file")
    return tuple(files)


def needed(files: tuple[AofFile, ...]) -> tuple[AofFile, ...]:
    """The base and every incr file, in load order; history files are not needed."""
    return tuple(f for f in files if f.type == "b") + tuple(
        sorted((f for f in files if f.type == "i"), key=lambda f: f.seq)
    )


def render_manifest(files: tuple[AofFile, ...]) -> str:
    return "".join(f"file {shlex.quote(f.name)} seq {f.seq} type {f.type}\n" for f in files)


def rename_prefix(files: tuple[AofFile, ...], old: str, new: str) -> tuple[AofFile, ...]:
    """Files are named <appendfilename>.<seq>.<kind>...; a target with another appendfilename needs new names."""
    if old == new:
        return files
    return tuple(AofFile(new + f.name[len(old):] if f.name.startswith(old) else f.name, f.seq, f.type) for f in files)
