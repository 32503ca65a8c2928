"""SIGINT, SIGTERM and SIGHUP end ``dbc-harness`` through the same unwinding as an error.

:func:`install` (called first thing in ``main()``) turns each of the three signals into
:class:`Interrupted` (a ``BaseException``), raised in the main thread: every ``with`` block
and ``finally`` on the way out runs, so the bench is closed and a claimed controller given back.
The process then exits ``128 + signal`` (130, 143, 129) with one line on stderr.

* Only the first signal raises. A further one while giving things back is remembered and
  ignored, so cleanup is never torn in half (each of its waits has a deadline);
  :data:`GIVE_UP_AFTER` signals end the process at once, saying what may be left over.
* :func:`shielded` defers a signal over a block that must not be cut short (opening or closing a
  bench); it is raised when the block ends.
* :func:`consume` forgets a signal that ended a command the normal way (``usbip`` and ``claim``
  run until interrupted and then exit 0).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from types import FrameType
from typing import TypeVar

T = TypeVar("T")

#: the signals that end a command; SIGHUP is left alone when it is ignored (``nohup``)
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: this many signals end the process without waiting for cleanup to finish
GIVE_UP_AFTER = 3


class Interrupted(BaseException):
    """The process received SIGINT, SIGTERM or SIGHUP; exits ``128 + signum``. Not an
    ``Exception`` (nothing that handles errors swallows it) and not a ``KeyboardInterrupt``
    (click would turn that into its own "Aborted!")."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        super().__init__(f"interrupted by {self.name}")

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _State:
    def __init__(self) -> None:
        self.first: int | None = None  # the signal that raised (or will, when a shield ends)
        self.count = 0
        self.shield = 0
        self.pending = False  # ``first`` arrived under a shield and was not raised yet
        self.holding = False  # the command is over: record, never raise


_state = _State()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    _state.count += 1
    if _state.count >= GIVE_UP_AFTER:
        name = signal.Signals(signum).name
        os.write(
            2,
            f"error: {name} {_state.count} times: stopping without finishing cleanup\n"
            "hint: `dbc-harness restore` gives back a controller that is still claimed\n".encode(),
        )
        os._exit(128 + (_state.first or signum))
    if _state.first is not None:
        return  # already unwinding: let cleanup finish
    _state.first = signum
    if _state.shield or _state.holding:
        _state.pending = True
        return
    raise Interrupted(signum)


def hold() -> None:
    """From now on a signal is only recorded (the command is over; the process is exiting)."""
    _state.holding = True


def install() -> None:
    """Route SIGINT, SIGTERM and SIGHUP (unless ignored) to :class:`Interrupted`."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in SIGNALS:
        if sig == signal.SIGHUP and signal.getsignal(sig) is signal.SIG_IGN:
            continue
        signal.signal(sig, _on_signal)


def received() -> Interrupted | None:
    """The signal that ended (or is ending) this process, if any."""
    return Interrupted(_state.first) if _state.first is not None else None


def consume() -> None:
    """A signal ended a command the normal way: exit as if none had arrived."""
    _state.first = None
    _state.count = 0
    _state.pending = False


def reset() -> None:
    """Forget everything (tests run several commands in one process)."""
    consume()
    _state.shield = 0
    _state.holding = False


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Hold back a signal until the block ends (then raise it, unless already unwinding)."""
    _state.shield += 1
    try:
        yield
    finally:
        _state.shield -= 1
    _raise_pending()


def _raise_pending() -> None:
    if not _state.shield and _state.pending and _state.first is not None:
        _state.pending = False
        raise Interrupted(_state.first)


@contextlib.contextmanager
def guarded(opener: Callable[[], AbstractContextManager[T]]) -> Iterator[T]:
    """``with guarded(lambda: open_bench(...)) as bench``: opening, entering and leaving (a
    bench, a claim, a server) are never cut short by a signal; one that arrives meanwhile is
    raised once it is fully open (so it is closed properly) or fully closed."""
    _state.shield += 1
    try:
        cm = opener()
        value = cm.__enter__()
    finally:
        _state.shield -= 1
    try:
        _raise_pending()
        yield value
    except BaseException as exc:
        _state.shield += 1
        try:
            suppressed = cm.__exit__(type(exc), exc, exc.__traceback__)
        finally:
            _state.shield -= 1
        if not suppressed:
            raise
        _raise_pending()
    else:
        with shielded():
            cm.__exit__(None, None, None)


def tolerate_encoding() -> None:
    """Text the terminal's encoding cannot show (``PYTHONIOENCODING=ascii``, a C locale) is
    printed escaped (``\\u2603``) instead of failing the command."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
