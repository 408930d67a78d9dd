"""The fault suite runs on the same real labs as the integration tests: reuse their fixtures."""

import pytest

from tests.integration.conftest import _need_redis, cli, lab, make_lab  # noqa: F401  (fixtures)


def pytest_collection_modifyitems(items):
    for item in items:
        if "faults" in str(item.fspath):
            item.add_marker(pytest.mark.integration)  # real labs, like tests/integration
