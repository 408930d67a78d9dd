"""Real redis-server clusters (and sshd) on loopback for integration tests. Each is stopped by its pid."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clusterbak.cli.app import app
from clusterbak.lab import cluster
from clusterbak.lab.inventory import write_inventory
from clusterbak.lab.load import load as load_keys
from clusterbak.lab.procs import free_base_port


def pytest_collection_modifyitems(items):
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def _need_redis():
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed: run `apt-get install -y redis-server redis-tools` "
                    "(the README's test command does this)", pytrace=False)


class LabHandle:
    def __init__(self, lab: cluster.Lab):
        self.lab = lab

    @property
    def seed(self) -> str:
        return self.lab.seed

    @property
    def inventory(self) -> str:
        return self.lab.inventory

    @property
    def port(self) -> int:
        return self.lab.nodes[0].port

    def node(self, port: int) -> cluster.LabNode:
        return next(n for n in self.lab.nodes if n.port == port)


def start_lab(root: Path, masters: int = 3, replicas: int = 1, keys: int = 0, ssh: bool = False,
              extra_conf: dict | None = None, access: cluster.LabAccess | None = None) -> LabHandle:
    base = free_base_port(masters * (1 + replicas))
    lab = cluster.up(root, masters, replicas, base, extra_conf=extra_conf, access=access)
    if ssh:
        from clusterbak.cli.lab_cmd import _with_sshd

        lab = _with_sshd(lab)
    write_inventory(lab)
    if keys:
        password = access.password if access else None
        if access and access.tls_dir:
            raise ValueError("start_lab(keys=...) does not load a TLS lab; load it through LabAccess.client")
        load_keys("127.0.0.1", base, keys, password=password)
    return LabHandle(lab)


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """A shared, healthy 3x1 lab with 2000 keys. Tests must leave it healthy."""
    handle = start_lab(tmp_path_factory.mktemp("lab"), keys=2000)
    yield handle
    cluster.down(Path(handle.lab.dir))


@pytest.fixture
def make_lab(tmp_path):
    """A private lab per test, for tests that break things."""
    made: list[LabHandle] = []

    def factory(**kwargs) -> LabHandle:
        handle = start_lab(tmp_path / f"lab{len(made)}", **kwargs)
        made.append(handle)
        return handle

    yield factory
    for handle in made:
        cluster.down(Path(handle.lab.dir))


class Cli:
    def __init__(self):
        self.runner = CliRunner()

    def __call__(self, *args: str, env: dict | None = None, input: str | None = None):
        return self.runner.invoke(app, list(args), env=env, input=input, catch_exceptions=False)

    def json(self, *args: str, env: dict | None = None):
        result = self(*args, "--json", env=env)
        doc = json.loads(result.stdout)
        assert doc["exit_code"] == result.exit_code
        return result, doc


@pytest.fixture
def cli():
    return Cli()
