"""Shared by every test: clusterbak's control-host state (pin records) goes to the test's own directory."""

from __future__ import annotations

import pytest

# Fixtures shared across directories (Docker engine and image, fleets, a loopback sshd): registered once here, so a
# test module just names them as parameters instead of importing them.
pytest_plugins = [
    "tests.integration.conftest_docker",
    "tests.integration.conftest_fleet",
    "tests.integration.conftest_sshd",
]


@pytest.fixture(autouse=True)
def _private_pin_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CLUSTERBAK_PIN_DIR", str(tmp_path / "pins"))


@pytest.fixture(autouse=True)
def _no_server_left_behind(tmp_path):
    """Every test stops what it starts: a redis-server still working in the test's own directory once the test and
    its fixtures are done fails the test (and is stopped, so one leak does not pile up under the next tests)."""
    yield
    import os
    import signal
    from pathlib import Path

    left = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"redis" in (proc / "cmdline").read_bytes() and \
                    os.readlink(proc / "cwd").startswith(str(tmp_path)):
                left.append(f"pid {proc.name} in {os.readlink(proc / 'cwd')}")
                os.kill(int(proc.name), signal.SIGKILL)
        except OSError:
            continue
    assert left == [], f"servers left running by this test: {left}"


def pytest_addoption(parser):
    parser.addoption("--update-goldens", action="store_true", default=False,
                     help="rewrite tests/unit/golden/* from what the code produces now (review the diff, then commit)")


@pytest.fixture
def golden(request):
    """golden(name, text): text must equal tests/unit/golden/<name>; with --update-goldens the file is rewritten."""
    from pathlib import Path

    folder = Path(__file__).parent / "unit" / "golden"
    update = request.config.getoption("--update-goldens")

    def check(name: str, text: str) -> None:
        path = folder / name
        if update:
            path.write_text(text)
            return
        assert path.exists(), f"no golden file {path}: run pytest with --update-goldens once, review it, commit it"
        assert text == path.read_text(), (f"{name} changed: if on purpose, run pytest --update-goldens and review "
                                           f"the diff of tests/unit/golden/{name}")

    return check
