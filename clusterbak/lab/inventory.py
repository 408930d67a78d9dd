"""Write the inventory.toml of a lab: local transport, or SSH through the lab's own sshd."""

from __future__ import annotations

import sys
from pathlib import Path

from clusterbak.lab.cluster import Lab
from clusterbak.model.inventory import inventory_toml


def render_inventory(lab: Lab, actions: tuple[str, ...] = ("restart", "stop", "start")) -> str:
    ctl = f"{sys.executable} -m clusterbak.lab.nodectl"
    defaults: dict[str, str | int] = {"transport": "local"}
    if lab.sshd:
        defaults = {"transport": "ssh", "ssh_user": lab.sshd["user"], "ssh_port": int(lab.sshd["port"]),
                    "ssh_key": lab.sshd["key_file"], "known_hosts": lab.sshd["known_hosts"]}
    for action in actions:
        defaults[f"{action}_command"] = f"{ctl} {action} --dir {{data_dir}} --port {{port}}"
    nodes: dict[str, dict[str, str | int]] = {}
    for node in lab.nodes:
        conf = _conf(Path(node.dir) / "redis.conf")
        nodes[node.address] = {"data_dir": node.dir,
                               "cluster_config_file": conf.get("cluster-config-file", "nodes.conf"),
                               "dbfilename": conf.get("dbfilename", "dump.rdb"),
                               "appendonly": conf.get("appendonly", "no"), "config_file": str(node.conf)}
        if conf.get("aclfile"):
            nodes[node.address]["aclfile"] = conf["aclfile"]
        if lab.sshd:
            nodes[node.address]["ssh_host"] = "127.0.0.1"
    return inventory_toml(["Written by `clusterbak lab up`: the lab's nodes and how to reach them."], defaults, nodes)


def _conf(path: Path) -> dict[str, str]:
    """The lab's own redis.conf (it wrote it): what a restore into a stopped node needs to know."""
    out = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, _, value = line.strip().partition(" ")
            if key and not key.startswith("#"):
                out[key] = value.strip().strip('"')
    return out


def write_inventory(lab: Lab, actions: tuple[str, ...] = ("restart", "stop", "start")) -> Path:
    """`actions`: the service commands (nodectl) it lists; a node without a stop_command is stopped with SHUTDOWN
    NOSAVE over Redis."""
    path = Path(lab.inventory)
    path.write_text(render_inventory(lab, actions))
    return path
