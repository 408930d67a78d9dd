"""The fault suite runs on the same real labs as the integration tests: reuse their fixtures."""

from tests.integration.conftest import _need_redis, cli, lab, make_lab  # noqa: F401  (fixtures)
