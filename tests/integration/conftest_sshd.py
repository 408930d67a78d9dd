"""A throwaway sshd on loopback for transport tests. A pytest plugin (tests/conftest.py lists it in pytest_plugins):
a test module names sshd_lab or ssh_transport as parameters."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from clusterbak.lab.sshd import SshdLab, start_sshd
from clusterbak.transports.ssh import SshTransport


@pytest.fixture(scope="session")
def sshd_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdLab]:
    """One sshd for the session, on a free port on 127.0.0.1, stopped by its pid at the end."""
    lab = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield lab
    finally:
        lab.stop()


def lab_transport(lab: SshdLab, **overrides: object) -> SshTransport:
    """An SshTransport to the lab sshd with its key and known_hosts; ~/.ssh/config is ignored unless given."""
    kwargs: dict = dict(
        port=lab.port,
        user=lab.user,
        key_file=lab.key_file,
        known_hosts=lab.known_hosts,
        ssh_config_path=None,
        retry_wait=0.05,
        connect_timeout=5.0,
        io_timeout=15.0,
    )
    kwargs.update(overrides)
    return SshTransport(lab.host, **kwargs)


@pytest.fixture
def ssh_transport(sshd_lab: SshdLab) -> Iterator[Callable[..., SshTransport]]:
    """A factory of SshTransports to the lab sshd (keyword overrides as SshTransport takes); all closed after."""
    made: list[SshTransport] = []

    def factory(**overrides: object) -> SshTransport:
        t = lab_transport(sshd_lab, **overrides)
        made.append(t)
        return t

    yield factory
    for t in made:
        t.close()


def leftovers(directory: str | os.PathLike[str]) -> list[str]:
    """Temp files our writers or test sinks left in a directory (there must be none)."""
    return sorted(n for n in os.listdir(directory) if ".clusterbak-tmp" in n or n.endswith(".part"))


__all__ = ["sshd_lab", "ssh_transport", "lab_transport", "leftovers"]
