"""A lab's state file: JSON written atomically (temp file + rename), read back as a dict (None when absent)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def read_state(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def write_state(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)
