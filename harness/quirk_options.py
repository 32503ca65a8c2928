"""``--quirk NAME[=VALUE]`` on the command line -> :class:`fixtures.virtual.Quirks`.

The virtual xHCI reproduces field problems of real parts, each a field of ``Quirks``; this turns
the CLI's text into those fields, typed from the dataclass itself (so a new quirk needs no change
here). Forms:

* flags: ``--quirk spurious_stall_on_clear_halt`` (or ``=true``/``=false``);
* numbers: ``--quirk dcst_er_lag_us=200``, ``--quirk unplug_after_out_bytes=65536``;
* choices: ``--quirk transfer_event_pointer=nonmonotonic``;
* endpoint IDs: ``--quirk endpoint_ids=0/1`` (AMD/spec style) or ``2/3`` (Intel);
* faults (repeatable): ``--quirk transfer_faults=out:3:babble`` (DbC ring, TD index from 0,
  ``babble`` or ``transaction_error``).

Bad text raises :class:`QuirkError` (a ``ValueError``) naming the quirk and the known names.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any


class QuirkError(ValueError):
    """A ``--quirk`` that names no quirk or whose value does not fit it."""


def _known(quirks_cls: type) -> str:
    return ", ".join(f.name for f in dataclasses.fields(quirks_cls))


def _bool(name: str, text: str | None) -> bool:
    if text is None or text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise QuirkError(f"quirk {name}: {text!r} is not true/false")


def _int(name: str, text: str | None) -> int:
    try:
        return int(text or "", 0)
    except ValueError:
        raise QuirkError(f"quirk {name}: {text!r} is not a number") from None


def _choice(name: str, text: str | None, choices: tuple[Any, ...]) -> str:
    if text not in choices:
        raise QuirkError(f"quirk {name}: {text!r} is not one of {', '.join(map(str, choices))}")
    return text


def _fault(text: str | None, fault_cls: type) -> Any:
    parts = (text or "").split(":")
    if len(parts) not in (2, 3):
        raise QuirkError(f"quirk transfer_faults: {text!r} is not RING:TD[:COMPLETION]")
    hints = typing.get_type_hints(fault_cls)
    ring = _choice("transfer_faults", parts[0], typing.get_args(hints["ring"]))
    td = _int("transfer_faults", parts[1])
    if len(parts) == 2:
        return fault_cls(ring, td)
    completion = _choice("transfer_faults", parts[2], typing.get_args(hints["completion"]))
    return fault_cls(ring, td, completion)


def parse_quirks(items: typing.Sequence[str]) -> Any:
    """``Quirks`` from ``NAME[=VALUE]`` items (defaults for everything not named)."""
    from fixtures.virtual import Quirks
    from fixtures.virtual.quirks import TransferFault

    hints = typing.get_type_hints(Quirks)
    values: dict[str, Any] = {}
    faults: list[Any] = []
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip().replace("-", "_")
        text = raw.strip() if sep else None
        if name not in hints:
            raise QuirkError(f"no quirk named {name!r}; quirks are: {_known(Quirks)}")
        hint = hints[name]
        if name == "transfer_faults":
            faults.append(_fault(text, TransferFault))
        elif name == "endpoint_ids":
            pair = (text or "").replace(",", "/").split("/")
            if len(pair) != 2:
                raise QuirkError(f"quirk endpoint_ids: {text!r} is not OUT/IN, e.g. 0/1 or 2/3")
            values[name] = (_int(name, pair[0]), _int(name, pair[1]))
        elif hint is bool:
            values[name] = _bool(name, text)
        elif typing.get_origin(hint) is typing.Literal:
            values[name] = _choice(name, text, typing.get_args(hint))
        else:  # int or int | None
            values[name] = _int(name, text)
    if faults:
        values["transfer_faults"] = tuple(faults)
    try:
        return Quirks(**values)
    except Exception as exc:  # the model's own validation (ConfigError)
        raise QuirkError(str(exc)) from exc
