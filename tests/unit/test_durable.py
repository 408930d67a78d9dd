"""The one fsync of a directory (clusterbak/durable.py) that the transports, storage and state files share."""

import pytest

from clusterbak.durable import fsync_dir


def test_fsync_dir_raises_unless_best_effort(tmp_path):
    fsync_dir(tmp_path)
    fsync_dir(str(tmp_path), best_effort=True)
    with pytest.raises(FileNotFoundError):
        fsync_dir(tmp_path / "missing")
    fsync_dir(tmp_path / "missing", best_effort=True)  # passed over: the rename it follows is atomic anyway
