"""dbc-harness: allocator (DMA spaces for drivers and device models).

One interface (:class:`DmaSpace`), one sub-allocator (:mod:`allocator.heap`), fixed-size pools
(:class:`DmaPool`) and three backends: emulated (virtual bench), hugepage (physical addresses
through pagemap) and iova (memory mapped for one device through a :class:`DmaMapper`).

Misuse is named: :class:`DoubleFree`, :class:`ForeignBuffer` (buffers are checked by identity)
and, with the sanitizer (``sanitize=``; on by default for the emulated backend, the virtual
bench; off by default for hugepage and iova, where speed and held memory count),
:class:`UseAfterFree` for freed memory used by the device or written through a stale view (see
:mod:`allocator.heap`).
"""

from dbc_harness.allocator.chunk import Chunk
from dbc_harness.allocator.emulated import EmulatedDmaSpace
from dbc_harness.allocator.errors import (
    AddressLimitUnsatisfiable,
    ContiguityError,
    DmaError,
    DmaFault,
    DoubleFree,
    ForeignBuffer,
    HugepagesUnavailable,
    InvalidRequest,
    PrivilegeRequired,
    RequestTooLarge,
    SpaceClosed,
    UseAfterFree,
)
from dbc_harness.allocator.heap import ChunkSource, HeapDmaSpace
from dbc_harness.allocator.hugepage import HugepageDmaSpace
from dbc_harness.allocator.iova import DmaMapper, IovaDmaSpace
from dbc_harness.allocator.pagemap import Pagemap
from dbc_harness.allocator.pool import DmaPool
from dbc_harness.allocator.reservation import HugepageReservation
from dbc_harness.allocator.space import DmaBuffer, DmaSpace

__all__ = [
    "AddressLimitUnsatisfiable",
    "Chunk",
    "ChunkSource",
    "ContiguityError",
    "DmaBuffer",
    "DmaError",
    "DmaFault",
    "DmaMapper",
    "DmaPool",
    "DmaSpace",
    "DoubleFree",
    "EmulatedDmaSpace",
    "ForeignBuffer",
    "HeapDmaSpace",
    "HugepageDmaSpace",
    "HugepageReservation",
    "HugepagesUnavailable",
    "InvalidRequest",
    "IovaDmaSpace",
    "Pagemap",
    "PrivilegeRequired",
    "RequestTooLarge",
    "SpaceClosed",
    "UseAfterFree",
]
