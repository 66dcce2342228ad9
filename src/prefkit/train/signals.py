"""Stopping on request: SIGTERM (a cluster's preemption notice) and SIGINT (Ctrl-C) let the current step or
iteration stage finish, then the loop writes a checkpoint and exits with one line saying how to resume. A second
signal exits at once; what is on disk stays readable because every write is atomic (prefkit.io)."""

from __future__ import annotations

import os
import signal
import sys
import threading

from prefkit.errors import RunStopped

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequests:
    """`with StopRequests() as stop:` ... `if stop.requested: ...`. Handlers are installed only in the main
    thread (Python's rule) and the previous ones are restored on exit."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:  # the second request: no more waiting
            print(f"\nprefkit: {name} again: exiting now; resume from the last checkpoint with --resume",
                  file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.signum = signum
        print(f"\nprefkit: {name}: finishing this step, then saving a checkpoint (send it again to exit at once)",
              file=sys.stderr, flush=True)

    def stopped(self, where: str) -> RunStopped:
        """The exception to raise once the loop has saved `where`."""
        name = signal.Signals(self.signum).name
        return RunStopped(f"stopped by {name}; saved {where}", exit_code=128 + self.signum, resumable=True)
