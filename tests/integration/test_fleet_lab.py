"""`clusterbak lab up/down --fleet`: hosts of their own, reached over SSH as redis; nothing left behind."""

from __future__ import annotations

import secrets

import pytest

from clusterbak.config import load_inventory
from clusterbak.errors import StepFailed
from clusterbak.lab import fleet as fl
from clusterbak.transports.factory import open_transport

from .conftest_docker import RUN, RUN_LABEL

pytestmark = [pytest.mark.docker]


def labelled(client, label: str) -> list[str]:
    selector = {"label": [label]}
    return [*(c.name for c in client.containers.list(all=True, filters=selector)),
            *(v.name for v in client.volumes.list(filters=selector)),
            *(n.name for n in client.networks.list(filters=selector))]


def test_lab_up_fleet_nodes_are_hosts_reached_over_ssh_and_down_removes_all(cli, docker_client, fleet_images,
                                                                             tmp_path, monkeypatch):
    monkeypatch.setenv("CLUSTERBAK_FLEET_IMAGES", ",".join(f"{k}={v}" for k, v in fleet_images.items()))
    lab_dir = tmp_path / "fleet"
    result, doc = cli.json("lab", "up", "--fleet", "--version", "valkey-8.0", "--image", fleet_images["valkey-8.0"],
                           "--masters", "1", "--replicas", "1", "--dir", str(lab_dir))
    try:
        assert result.exit_code == 0, doc["errors"]
        lab_id = doc["data"]["lab_id"]
        ips = {n["address"].rsplit(":", 1)[0] for n in doc["data"]["nodes"]}
        assert len(ips) == 2 and not ips & {"127.0.0.1"}
        fleet = fl.load(lab_dir)
        for node in fleet.nodes:
            # the inventory's own way in: its user, key and known_hosts (no new host key accepted)
            t = open_transport(load_inventory(fleet.inventory).access(node.address), False)
            try:
                assert t.run("id -un; hostname").stdout.split() == ["redis", node.name]
                assert t.stat("/data/nodes.conf") is not None
            finally:
                t.close()
        assert len(labelled(docker_client, f"org.clusterbak.lab={lab_id}")) == 2 * 3 + 1  # containers, volumes, net
    finally:
        result, doc = cli.json("lab", "down", "--fleet", "--dir", str(lab_dir))
    assert result.exit_code == 0, doc["errors"]
    assert labelled(docker_client, f"org.clusterbak.lab={lab_id}") == []


def test_a_fleet_that_fails_to_start_leaves_nothing(docker_client, docker_image, tmp_path):
    """The plain test image has no sshd: its nodes exit, up() fails naming the node, and removes all it made."""
    case = secrets.token_hex(4)
    with pytest.raises(StepFailed, match=r"fleet node .* exited"):
        fl.up(tmp_path / "fleet", "redis-7.0", 1, 0, image=docker_image, name_prefix=f"clusterbak-test-{RUN}",
              extra_labels={RUN_LABEL: RUN, "org.clusterbak.case": case}, timeout=30)
    assert labelled(docker_client, f"org.clusterbak.case={case}") == []
    assert fl.load(tmp_path / "fleet") is None
