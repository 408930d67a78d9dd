"""INFO of several sections in one call where the server allows it (7.0+), one call per section before that."""

from __future__ import annotations

import redis


def info_sections(client: redis.Redis, *sections: str) -> dict:
    """The merged INFO of `sections`. Redis 6.x answers a multi-section INFO with a syntax error."""
    try:
        return client.info(*sections)
    except redis.ResponseError as exc:
        if len(sections) < 2 or "syntax error" not in str(exc).lower():
            raise
    merged: dict = {}
    for section in sections:
        merged.update(client.info(section))
    return merged
