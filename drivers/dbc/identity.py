"""What the debug host sees: VID/PID/bcdDevice/protocol (DCDDI1/DCDDI2) and the four strings.

The DbC hardware builds the device, configuration, interface and endpoint descriptors itself;
software supplies only :class:`DbcIdentity`. The defaults (1d6b:0010, protocol 0) make Linux's
``usb_debug`` serial driver bind the device as ``/dev/ttyUSBn`` ("xhci_dbc").
"""

from __future__ import annotations

from dataclasses import dataclass

from dbc_harness.drivers.dbc.errors import DbcConfigError
from dbc_harness.drivers.xhci.registers import (
    DBC_DEFAULT_DEVICE_REVISION,
    DBC_DEFAULT_PRODUCT_ID,
    DBC_DEFAULT_VENDOR_ID,
)

#: a USB string descriptor is at most 255 bytes: 2 header bytes + 126 UTF-16 code units
MAX_STRING_UNITS = 126
#: LANGID 0x0409 (English, United States), the one every DbC driver announces
LANGID_EN_US = 0x0409


@dataclass(frozen=True)
class DbcIdentity:
    """The identity the DbC presents (DbC Info Context strings + DCDDI1/DCDDI2).

    ``protocol`` is DCDDI1 bits 7:0 (the interface's bInterfaceProtocol: 0 = vendor defined,
    1 = GNU Remote Debug Command Set).
    """

    vendor_id: int = DBC_DEFAULT_VENDOR_ID
    product_id: int = DBC_DEFAULT_PRODUCT_ID
    bcd_device: int = DBC_DEFAULT_DEVICE_REVISION
    protocol: int = 0
    manufacturer: str = "Linux Foundation"
    product: str = "Linux USB Debug Target"
    serial: str = "0001"
    langid: int = LANGID_EN_US

    def __post_init__(self) -> None:
        for name in ("vendor_id", "product_id", "bcd_device", "langid"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= 0xFFFF:
                raise DbcConfigError(f"{name} must be a 16-bit integer, got {value!r}")
        if not isinstance(self.protocol, int) or not 0 <= self.protocol <= 0xFF:
            raise DbcConfigError(f"protocol must be an 8-bit integer, got {self.protocol!r}")
        for name in ("manufacturer", "product", "serial"):
            text = getattr(self, name)
            if not isinstance(text, str):
                raise DbcConfigError(f"{name} must be a str, got {type(text).__name__}")
            units = len(text.encode("utf-16-le")) // 2
            if units > MAX_STRING_UNITS:
                raise DbcConfigError(
                    f"{name} is {units} UTF-16 code units; a USB string descriptor holds at most "
                    f"{MAX_STRING_UNITS}"
                )

    @property
    def strings(self) -> tuple[str, str, str]:
        """(manufacturer, product, serial) in DbC Info Context order."""
        return (self.manufacturer, self.product, self.serial)
