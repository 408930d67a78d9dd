"""Load the inventory file from disk: TOML syntax, shape (model.inventory), and the files it names."""

from __future__ import annotations

import os
import tomllib
from dataclasses import replace
from pathlib import Path

from clusterbak.errors import InventoryError
from clusterbak.model.inventory import Inventory, NodeAccess, parse_inventory


def _read_toml(path: Path, what: str, fix: str, error: type[Exception]) -> dict:
    """A TOML file the operator named; every failure is one line naming the file (and `fix` when it is missing)."""
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise error(f"{what} {path} does not exist; {fix}") from exc
    except OSError as exc:
        raise error(f"{what} {path} cannot be read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{what} {path} is not valid TOML: {exc}") from exc


def load_inventory(path: str | Path) -> Inventory:
    path = Path(path)
    raw = _read_toml(path, "inventory", "pass --inventory FILE (the lab writes one)", InventoryError)
    inventory = parse_inventory(raw, source=str(path))
    nodes = tuple(_expand_and_check(node, str(path)) for node in inventory.nodes)
    return replace(inventory, nodes=nodes)


def _expand_and_check(node: NodeAccess, source: str) -> NodeAccess:
    key = os.path.expanduser(node.ssh_key) if node.ssh_key else None
    known = os.path.expanduser(node.known_hosts) if node.known_hosts else None
    where = f'[nodes."{node.address}"]'
    if node.transport == "ssh" and key and not os.path.isfile(key):
        raise InventoryError(f"{source}: {where} ssh_key {key} does not exist; fix the path or create the key")
    if node.transport == "ssh" and known and not os.path.isdir(os.path.dirname(known) or "."):
        raise InventoryError(f"{source}: {where} known_hosts {known}: its directory does not exist")
    return replace(node, ssh_key=key, known_hosts=known)


def load_config(path: str | Path | None) -> tuple[dict, str | None]:
    """clusterbak.toml (today: its [retention] table) as {rule: value}, and its path for messages."""
    if path is None:
        return {}, None
    from clusterbak.errors import UsageError
    from clusterbak.model.retention import parse_retention

    path = Path(path)
    raw = _read_toml(path, "config", "fix --config or $CLUSTERBAK_CONFIG", UsageError)
    unknown = sorted(set(raw) - {"retention"})
    if unknown:
        raise UsageError(f"config {path}: unknown table [{unknown[0]}]; known: [retention]")
    return parse_retention(raw, str(path)), str(path)
