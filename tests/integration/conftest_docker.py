"""Docker fixtures: the engine check, the local Redis image, and a lab of containers. A pytest plugin (tests/conftest.py
lists it in pytest_plugins): a test module names docker_client, docker_image or docker_lab as parameters.

No engine reachable: the tests fail, naming what to do. CLUSTERBAK_SKIP_DOCKER=1, set deliberately, skips them
(engine or not), and the skip reason says so in pytest's summary. Everything a fixture makes carries the label
org.clusterbak.test-run=$CLUSTERBAK_TEST_RUN, by which scripts/test.sh removes leftovers even after a crash.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from clusterbak.lab import docker_lab as dlab
from clusterbak.lab.load import load as load_keys
from clusterbak.lab.procs import free_base_port
from tests.integration.conftest import LabHandle

ROOT = Path(__file__).resolve().parents[2]
RUN = os.environ.get("CLUSTERBAK_TEST_RUN") or secrets.token_hex(4)
RUN_LABEL = "org.clusterbak.test-run"
SKIP_ENV = "CLUSTERBAK_SKIP_DOCKER"


def engine_problem() -> str | None:
    """None when a Docker Engine answers, else why not."""
    try:
        import docker

        client = docker.from_env(timeout=10)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001 - any failure means: no usable engine
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def no_engine(why: str) -> None:
    pytest.fail(f"NO DOCKER ENGINE: the Docker tests cannot run ({why}). Start dockerd (or set DOCKER_HOST); "
                f"to run without them on purpose set {SKIP_ENV}=1.", pytrace=False)


@pytest.fixture(scope="session")
def docker_client():
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1: the Docker tests are SKIPPED DELIBERATELY (engine or not)")
    why = engine_problem()
    if why is not None:
        no_engine(why)
    import docker

    client = docker.from_env(timeout=120)
    yield client
    client.close()


@pytest.fixture(scope="session")
def docker_image(docker_client) -> str:
    """The local test image: $CLUSTERBAK_TEST_IMAGE when scripts/test.sh built it, else built (or reused) now."""
    image = os.environ.get("CLUSTERBAK_TEST_IMAGE")
    if not image:
        done = subprocess.run([str(ROOT / "scripts" / "build-test-image.sh")], capture_output=True, text=True,
                              timeout=600)
        if done.returncode != 0:
            pytest.fail(f"scripts/build-test-image.sh failed: {done.stderr.strip()[-800:]}", pytrace=False)
        image = done.stdout.strip().splitlines()[-1]
    docker_client.images.get(image)  # raises ImageNotFound loudly if the script lied
    return image


class DockerLabHandle(LabHandle):
    """The same handle as the process lab's, over a lab of containers."""

    def port_of(self, role: str) -> list[int]:
        return [n.port for n in self.lab.nodes if n.role == role]


def start_docker_lab(root: Path, image: str, masters: int = 3, replicas: int = 1, keys: int = 0) -> DockerLabHandle:
    base = free_base_port(masters * (1 + replicas))
    lab = dlab.up(root, image, masters, replicas, base, name_prefix=f"clusterbak-test-{RUN}-{secrets.token_hex(2)}",
                  extra_labels={RUN_LABEL: RUN})
    if keys:
        load_keys("127.0.0.1", base, keys, ttl_every=0)
    return DockerLabHandle(lab)


@pytest.fixture(scope="module")
def docker_lab(docker_image, tmp_path_factory) -> Iterator[DockerLabHandle]:
    """A 3x1 cluster of containers with 3000 keys (no TTLs), removed at the end whatever happened."""
    root = tmp_path_factory.mktemp("docker-lab")
    try:
        handle = start_docker_lab(root, docker_image, keys=3000)
    except BaseException:
        dlab.purge({RUN_LABEL: RUN})
        raise
    try:
        yield handle
    finally:
        dlab.down(root)
