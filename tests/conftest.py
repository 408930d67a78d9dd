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
