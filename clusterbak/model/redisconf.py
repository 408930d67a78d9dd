"""Read directives out of a redis.conf text (the file, not CONFIG GET). Pure."""

from __future__ import annotations

import shlex


def directives(text: str) -> dict[str, str]:
    """Last value of each directive, lower-cased names; quoted values unquoted. `include` is not followed."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            parts = shlex.split(line)
        except ValueError:
            parts = line.split()
        if parts:
            out[parts[0].lower()] = " ".join(parts[1:])
    return out


def dir_directive(text: str) -> str | None:
    """The `dir` a config file sets, or None when it sets none (then the server's start cwd is used)."""
    return directives(text).get("dir")
