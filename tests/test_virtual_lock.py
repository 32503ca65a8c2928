"""The virtual xHCI's lock: RLock semantics, Condition support, a deadline, and no convoy."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from dbc_harness.fixtures.virtual import ModelBusy, VirtualXhci
from dbc_harness.fixtures.virtual import lock as lock_mod
from dbc_harness.fixtures.virtual.lock import ModelLock


def test_reentrant_and_owned_by_one_thread() -> None:
    lk = ModelLock()
    with lk:
        with lk:
            assert lk._is_owned()
        assert lk._is_owned()
        seen: list[bool] = []
        t = threading.Thread(target=lambda: seen.append(lk.acquire(blocking=False)))
        t.start()
        t.join()
        assert seen == [False]
    assert not lk._is_owned()
    with pytest.raises(RuntimeError):
        lk.release()


@contextmanager
def _held_by_another_thread(lk: ModelLock, name: str = "holder") -> Iterator[None]:
    """``lk`` held by a thread called ``name`` for the duration of the block."""
    got = threading.Event()
    done = threading.Event()

    def hold() -> None:
        with lk:
            got.set()
            done.wait(5)

    t = threading.Thread(target=hold, name=name)
    t.start()
    got.wait(5)
    try:
        yield
    finally:
        done.set()
        t.join()


def test_timed_acquire_gives_up_and_release_by_other_thread_refused() -> None:
    lk = ModelLock()
    with _held_by_another_thread(lk):
        t0 = time.monotonic()
        assert lk.acquire(timeout=0.05) is False
        assert 0.04 <= time.monotonic() - t0 < 2.0
        with pytest.raises(RuntimeError):
            lk.release()
    assert lk.acquire(timeout=1.0)
    lk.release()


def test_condition_wait_releases_every_level_and_restores_it() -> None:
    lk = ModelLock()
    # Condition duck-types its lock; typeshed lists only the stdlib lock classes
    cond = threading.Condition(lk)  # type: ignore[arg-type]
    ready: list[int] = []

    def producer() -> None:
        time.sleep(0.02)
        with cond:  # would block for ever if wait() kept the nested level
            ready.append(1)
            cond.notify_all()

    t = threading.Thread(target=producer)
    with lk:
        with cond:
            t.start()
            assert cond.wait_for(lambda: ready, timeout=5.0)
            assert lk._count == 2
        assert lk._count == 1
    t.join()


def test_untimed_acquire_has_a_deadline_naming_the_holder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lock_mod, "DEADLINE_S", 0.1)
    lk = ModelLock()
    with _held_by_another_thread(lk, "stuck-trace-sink"):
        with pytest.raises(ModelBusy, match="stuck-trace-sink"):
            lk.acquire()


def test_two_threads_hammering_the_model_keep_it_consistent() -> None:
    """Threads that take the lock in turns (as driver and peer do) lose no update."""
    x = VirtualXhci(strict=True)
    counter = [0]

    def work() -> None:
        for _ in range(20_000):
            with x.operation():
                v = counter[0]
                counter[0] = v + 1

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    x.close()
    assert counter[0] == 60_000


def test_a_condition_wait_that_cannot_take_the_lock_back_raises_model_busy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lock_mod, "DEADLINE_S", 0.1)
    lk = ModelLock()
    cond = threading.Condition(lk)  # type: ignore[arg-type]  # duck-typed lock, as above
    taken = threading.Event()
    done = threading.Event()

    def hog() -> None:
        with cond:
            cond.notify_all()  # wake the waiter, then keep the lock past its deadline
            taken.set()
            done.wait(5)

    t = threading.Thread(target=hog, name="hog")
    try:
        with pytest.raises(ModelBusy, match="hog"):
            with cond:
                t.start()
                cond.wait(5)
    finally:
        done.set()
        t.join()
    assert taken.is_set() and not lk._is_owned()
