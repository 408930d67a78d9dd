"""Ctrl-C and SIGTERM for commands that must not stop half-way: the first one asks to stop at the next safe
point, a second one stops at once (KeyboardInterrupt, handled by the engine that installed the flag)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class StopFlag:
    """First Ctrl-C or SIGTERM: finish what is under way, then stop. A second one: stop now."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False

    @contextmanager
    def on_sigint(self, notify: Callable[[], None]) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame) -> None:
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True
            notify()

        previous = {sig: signal.signal(sig, handler) for sig in self.SIGNALS}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
