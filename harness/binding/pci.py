"""PCI configuration-space names the binding layer needs (PCI Local Bus spec 3.0, section 6.2;
the same names as Linux ``include/uapi/linux/pci_regs.h``), and PCI address validation.

Only the Command register is touched: Memory Space Enable and Bus Master Enable.
"""

from __future__ import annotations

import re

from dbc_harness.harness.binding.errors import BadAddress

#: Class code of an xHCI: base class 0x0C (serial bus), subclass 0x03 (USB), prog-if 0x30 (xHCI).
PCI_CLASS_SERIAL_USB_XHCI = 0x0C0330

#: Command register (16 bits) at config offset 0x04.
PCI_COMMAND = 0x04
#: Command register bit 1: Memory Space Enable (the device answers BAR memory cycles).
PCI_COMMAND_MEMORY = 0x0002
#: Command register bit 2: Bus Master Enable (the device may issue DMA).
PCI_COMMAND_MASTER = 0x0004

_BDF = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]$")


def normalize_bdf(bdf: str) -> str:
    """``bdf`` as the kernel spells it (``0000:00:04.0``); ``00:04.0`` gets domain 0000.
    BadAddress for anything else (so no path traversal can reach sysfs writes)."""
    text = bdf.strip().lower()
    if len(text) == 7:
        text = "0000:" + text
    if not _BDF.match(text):
        raise BadAddress(f"{bdf!r} is not a PCI address like 0000:00:04.0")
    return text
