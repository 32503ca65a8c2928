"""Explicit hugepage reservation: :class:`HugepageReservation`.

Raises ``/sys/kernel/mm/hugepages/hugepages-<size>kB/nr_hugepages`` only by what is missing
(``count`` minus the free pages of that size) and writes back exactly the old value on
``release()``, on leaving the ``with`` block and at interpreter exit (atexit), whichever comes
first. Release reservations in the reverse order of acquiring them.
"""

from __future__ import annotations

import atexit
import threading
from pathlib import Path
from types import TracebackType

from dbc_harness.allocator.errors import HugepagesUnavailable, InvalidRequest

HUGEPAGES_SYSFS = Path("/sys/kernel/mm/hugepages")


def hugepage_dir(size_kb: int, sysfs: Path = HUGEPAGES_SYSFS) -> Path:
    return sysfs / f"hugepages-{size_kb}kB"


def free_hugepages(size_kb: int = 2048, sysfs: Path = HUGEPAGES_SYSFS) -> int:
    """Free hugepages of ``size_kb`` right now (0 when the size does not exist)."""
    try:
        return int((hugepage_dir(size_kb, sysfs) / "free_hugepages").read_text())
    except OSError:
        return 0


class HugepageReservation:
    """Make sure ``count`` hugepages of ``size_kb`` are free; give back what we added."""

    def __init__(self, count: int, size_kb: int = 2048, sysfs: Path = HUGEPAGES_SYSFS) -> None:
        if count < 0:
            raise InvalidRequest(f"cannot reserve {count} hugepages")
        self.count = count
        self.size_kb = size_kb
        self.sysfs = sysfs
        self.nr_hugepages_path = hugepage_dir(size_kb, sysfs) / "nr_hugepages"
        self.old_value: int | None = None
        self.added = 0
        self._lock = threading.Lock()
        self._acquire()

    def _acquire(self) -> None:
        path = self.nr_hugepages_path
        if not path.parent.is_dir():
            raise HugepagesUnavailable(
                f"this kernel has no {self.size_kb} kB hugepages ({path.parent} is missing)"
            )
        old = int(path.read_text())
        missing = self.count - free_hugepages(self.size_kb, self.sysfs)
        if missing <= 0:
            return
        try:
            path.write_text(f"{old + missing}\n")
        except OSError as exc:
            raise HugepagesUnavailable(
                f"need {missing} more {self.size_kb} kB hugepages; cannot write {path} ({exc}): "
                f"run as root or `echo {old + missing} > {path}`"
            ) from exc
        self.old_value = old
        self.added = missing
        atexit.register(self.release)
        have = free_hugepages(self.size_kb, self.sysfs)
        if have < self.count:
            self.release()
            raise HugepagesUnavailable(
                f"asked for {self.count} free {self.size_kb} kB hugepages, the kernel found only "
                f"{have} (memory fragmented?): write a larger value to {path} early after boot"
            )

    @property
    def active(self) -> bool:
        """True while nr_hugepages holds pages we added."""
        return self.old_value is not None

    def release(self) -> None:
        """Write back the old nr_hugepages (idempotent)."""
        with self._lock:
            if self.old_value is None:
                return
            old, self.old_value = self.old_value, None
            self.added = 0
            atexit.unregister(self.release)
            self.nr_hugepages_path.write_text(f"{old}\n")

    def __enter__(self) -> HugepageReservation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"HugepageReservation({self.count}, size_kb={self.size_kb}, added={self.added})"
