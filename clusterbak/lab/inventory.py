"""Write the inventory.toml of a lab: local transport, or SSH through the lab's own sshd."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from clusterbak.lab.cluster import Lab


def _q(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string for our characters


def render_inventory(lab: Lab) -> str:
    ctl = f"{sys.executable} -m clusterbak.lab.nodectl"
    lines = ["# Written by `clusterbak lab up`: the lab's nodes and how to reach them.", "", "[defaults]"]
    if lab.sshd:
        lines += [
            'transport = "ssh"',
            f"ssh_user = {_q(lab.sshd['user'])}",
            f"ssh_port = {int(lab.sshd['port'])}",
            f"ssh_key = {_q(lab.sshd['key_file'])}",
            f"known_hosts = {_q(lab.sshd['known_hosts'])}",
        ]
    else:
        lines.append('transport = "local"')
    for action in ("restart", "stop", "start"):
        lines.append(f"{action}_command = {_q(ctl + ' ' + action + ' --dir {data_dir} --port {port}')}")
    for node in lab.nodes:
        conf = _conf(Path(node.dir) / "redis.conf")
        lines += ["", f'[nodes."{node.address}"]', f"data_dir = {_q(node.dir)}",
                  f"cluster_config_file = {_q(conf.get('cluster-config-file', 'nodes.conf'))}",
                  f"dbfilename = {_q(conf.get('dbfilename', 'dump.rdb'))}",
                  f"appendonly = {_q(conf.get('appendonly', 'no'))}",
                  f"config_file = {_q(str(node.conf))}"]
        if conf.get("aclfile"):
            lines.append(f"aclfile = {_q(conf['aclfile'])}")
        if lab.sshd:
            lines.append('ssh_host = "127.0.0.1"')
    return "\n".join(lines) + "\n"


def _conf(path: Path) -> dict[str, str]:
    """The lab's own redis.conf (it wrote it): what a restore into a stopped node needs to know."""
    out = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, _, value = line.strip().partition(" ")
            if key and not key.startswith("#"):
                out[key] = value.strip().strip('"')
    return out


def write_inventory(lab: Lab) -> Path:
    path = Path(lab.inventory)
    path.write_text(render_inventory(lab))
    return path
