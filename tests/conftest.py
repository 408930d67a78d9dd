"""Shared by every test: clusterbak's control-host state (pin records) goes to the test's own directory."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_pin_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CLUSTERBAK_PIN_DIR", str(tmp_path / "pins"))
