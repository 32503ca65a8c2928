"""The claim state file: what the machine looked like before we touched a controller.

Written (atomically, fsync'd) BEFORE anything changes, removed only after the original driver is
back. ``dbc-harness restore`` reads it after a kill -9 or a power cut of the harness process.
Default directory: ``$DBC_HARNESS_STATE_DIR`` or ``/run/dbc-harness`` (tmpfs: a reboot restores
the machine by itself, and the stale file goes with it).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dbc_harness.harness.binding.errors import NotPermitted, StateFileError
from dbc_harness.harness.binding.pci import normalize_bdf

DEFAULT_STATE_DIR = "/run/dbc-harness"
STATE_VERSION = 1


def state_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The directory holding state files (argument, then env, then the default)."""
    if path is not None:
        return Path(path)
    return Path(os.environ.get("DBC_HARNESS_STATE_DIR", DEFAULT_STATE_DIR))


@dataclass
class ClaimState:
    """One controller's pre-claim state."""

    bdf: str
    #: "vfio" or "sysfs"
    mode: str
    #: driver bound before the claim (e.g. "xhci_hcd"), or None if it was unbound
    original_driver: str | None
    #: driver_override before the claim (None when unset)
    original_driver_override: str | None
    iommu_group: int | None = None
    #: PID of the harness process holding the claim
    pid: int = field(default_factory=os.getpid)
    created: float = field(default_factory=time.time)
    version: int = STATE_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str, where: str = "<string>") -> ClaimState:
        try:
            raw = json.loads(text)
            if not isinstance(raw, dict):
                raise TypeError("not a JSON object")
            if raw.get("version") != STATE_VERSION:
                raise ValueError(f"unknown version {raw.get('version')!r}")
            st = cls(
                bdf=normalize_bdf(str(raw["bdf"])),
                mode=str(raw["mode"]),
                original_driver=_opt_str(raw["original_driver"]),
                original_driver_override=_opt_str(raw["original_driver_override"]),
                iommu_group=None if raw.get("iommu_group") is None else int(raw["iommu_group"]),
                pid=int(raw["pid"]),
                created=float(raw["created"]),
            )
        except (ValueError, TypeError, KeyError) as e:
            raise StateFileError(f"state file {where} is unreadable: {e}") from e
        if st.mode not in ("vfio", "sysfs"):
            raise StateFileError(f"state file {where}: unknown mode {st.mode!r}")
        return st


def _opt_str(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"expected a string or null, got {value!r}")
    return value


def path_for(bdf: str, directory: str | os.PathLike[str] | None = None) -> Path:
    return state_dir(directory) / f"{normalize_bdf(bdf)}.json"


def write(
    st: ClaimState, directory: str | os.PathLike[str] | None = None, *, exclusive: bool = False
) -> Path:
    """Persist ``st`` atomically (temp file, fsync, rename, fsync dir). ``exclusive``: fail with
    FileExistsError when a state file for the controller already exists (two claims racing)."""
    d = state_dir(directory)
    try:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
    except PermissionError as e:
        raise NotPermitted(
            f"cannot create the state directory {d}: {e.strerror} (run as root, or set "
            "DBC_HARNESS_STATE_DIR)"
        ) from e
    final = path_for(st.bdf, d)
    tmp = final.with_suffix(f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, st.to_json().encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    if exclusive:
        try:
            os.link(tmp, final)
        finally:
            tmp.unlink()
    else:
        os.replace(tmp, final)
    dfd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return final


def read(path: str | os.PathLike[str]) -> ClaimState:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise StateFileError(f"cannot read state file {p}: {e.strerror}") from e
    return ClaimState.from_json(text, str(p))


def remove(bdf: str, directory: str | os.PathLike[str] | None = None) -> None:
    try:
        path_for(bdf, directory).unlink()
    except FileNotFoundError:
        pass


def list_states(directory: str | os.PathLike[str] | None = None) -> list[Path]:
    d = state_dir(directory)
    if not d.is_dir():
        return []
    return sorted(d.glob("*.json"))


def pid_alive(pid: int) -> bool:
    """True when ``pid`` is a live process (a claim held by it is not stale)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie still answers kill(0): look at its state
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True
