"""VFIO and iommufd from Python: ioctl numbers, argument structs, and thin fd wrappers.

Linux ``include/uapi/linux/vfio.h`` and ``iommufd.h``: every request is ``_IO(';', nr)`` =
``0x3B00 | nr``; the argument struct carries its own length in a leading ``argsz``/``size``.
These are kernel ABI structs (not xHCI layouts), packed with :mod:`struct`.

Two ways in:

* group/container (type1v2): ``/dev/vfio/vfio`` + ``/dev/vfio/<group>``, every kernel with VFIO.
  Proven on the kernel bench (Debian 6.1 guest with an emulated Intel IOMMU).
* iommufd + device cdev: ``/dev/iommu`` + ``/dev/vfio/devices/vfioN`` (kernels >= 6.6 built with
  VFIO_DEVICE_CDEV and IOMMUFD). Implemented from the uapi headers and unit-tested for request
  numbers and packing only: the bench's 6.1 kernel lacks it, so it is NOT proven on a device.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from dbc_harness.harness.binding.errors import NoIommu, NotPermitted, VfioError

VFIO_TYPE = ord(";")


def _io(nr: int) -> int:
    """``_IO(';', nr)``: no size or direction bits (VFIO passes the size inside the struct)."""
    return (VFIO_TYPE << 8) | nr


VFIO_API_VERSION = 0
VFIO_GET_API_VERSION = _io(100)
VFIO_CHECK_EXTENSION = _io(101)
VFIO_SET_IOMMU = _io(102)
VFIO_GROUP_GET_STATUS = _io(103)
VFIO_GROUP_SET_CONTAINER = _io(104)
VFIO_GROUP_UNSET_CONTAINER = _io(105)
VFIO_GROUP_GET_DEVICE_FD = _io(106)
VFIO_DEVICE_GET_INFO = _io(107)
VFIO_DEVICE_GET_REGION_INFO = _io(108)
VFIO_DEVICE_RESET = _io(111)
VFIO_IOMMU_GET_INFO = _io(112)
VFIO_IOMMU_MAP_DMA = _io(113)
VFIO_IOMMU_UNMAP_DMA = _io(114)
VFIO_DEVICE_BIND_IOMMUFD = _io(118)
VFIO_DEVICE_ATTACH_IOMMUFD_PT = _io(119)

IOMMU_DESTROY = _io(0x80)
IOMMU_IOAS_ALLOC = _io(0x81)
IOMMU_IOAS_MAP = _io(0x85)
IOMMU_IOAS_UNMAP = _io(0x86)

# VFIO_CHECK_EXTENSION / VFIO_SET_IOMMU arguments
VFIO_TYPE1_IOMMU = 1
VFIO_TYPE1v2_IOMMU = 3
VFIO_NOIOMMU_IOMMU = 8

# vfio_group_status.flags
VFIO_GROUP_FLAGS_VIABLE = 1 << 0
VFIO_GROUP_FLAGS_CONTAINER_SET = 1 << 1

# vfio_device_info.flags
VFIO_DEVICE_FLAGS_RESET = 1 << 0
VFIO_DEVICE_FLAGS_PCI = 1 << 1

# vfio_region_info.flags and the vfio-pci region indices
VFIO_REGION_INFO_FLAG_READ = 1 << 0
VFIO_REGION_INFO_FLAG_WRITE = 1 << 1
VFIO_REGION_INFO_FLAG_MMAP = 1 << 2
VFIO_PCI_BAR0_REGION_INDEX = 0
VFIO_PCI_CONFIG_REGION_INDEX = 7

# vfio_iommu_type1_info
VFIO_IOMMU_INFO_PGSIZES = 1 << 0
VFIO_IOMMU_INFO_CAPS = 1 << 1
VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE = 1

# vfio_iommu_type1_dma_map.flags
VFIO_DMA_MAP_FLAG_READ = 1 << 0
VFIO_DMA_MAP_FLAG_WRITE = 1 << 1

# iommu_ioas_map.flags
IOMMU_IOAS_MAP_FIXED_IOVA = 1 << 0
IOMMU_IOAS_MAP_WRITEABLE = 1 << 1
IOMMU_IOAS_MAP_READABLE = 1 << 2

# struct layouts (native little-endian x86-64, explicit sizes)
GROUP_STATUS = struct.Struct("<II")  # argsz, flags
DEVICE_INFO = struct.Struct("<IIIIII")  # argsz, flags, num_regions, num_irqs, cap_offset, pad
REGION_INFO = struct.Struct("<IIIIQQ")  # argsz, flags, index, cap_offset, size, offset
IOMMU_INFO = struct.Struct("<IIQII")  # argsz, flags, iova_pgsizes, cap_offset, pad
DMA_MAP = struct.Struct("<IIQQQ")  # argsz, flags, vaddr, iova, size
DMA_UNMAP = struct.Struct("<IIQQ")  # argsz, flags, iova, size
CAP_HEADER = struct.Struct("<HHI")  # id, version, next
IOVA_RANGE_CAP = struct.Struct("<II")  # nr_iovas, reserved (after the header)
IOVA_RANGE = struct.Struct("<QQ")  # start, end (inclusive)
BIND_IOMMUFD = struct.Struct("<IIiI")  # argsz, flags, iommufd, out_devid
ATTACH_IOMMUFD_PT = struct.Struct("<III")  # argsz, flags, pt_id
IOAS_ALLOC = struct.Struct("<III")  # size, flags, out_ioas_id
IOAS_MAP = struct.Struct("<IIIIQQQ")  # size, flags, ioas_id, reserved, user_va, length, iova
IOAS_UNMAP = struct.Struct("<IIQQ")  # size, ioas_id, iova, length
IOMMU_DESTROY_ARG = struct.Struct("<II")  # size, id


def _ioctl(fd: int, request: int, arg: bytearray | int, what: str, hint: str = "") -> int:
    """``ioctl`` with a mutable buffer (so the int result is kept) and a named error."""
    try:
        if isinstance(arg, bytearray):
            return fcntl.ioctl(fd, request, arg, True)
        return fcntl.ioctl(fd, request, arg)
    except OSError as e:
        code = e.errno or errno.EIO
        if code in (errno.EPERM, errno.EACCES) and not hint:
            hint = "run as root (or give this user the /dev/vfio nodes and RLIMIT_MEMLOCK)"
        raise VfioError(what, code, hint) from e


def _open(path: str | Path, what: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError as e:
        raise NoIommu(f"{path} does not exist: {what}") from e
    except PermissionError as e:
        raise NotPermitted(f"cannot open {path}: {e.strerror} (root or a udev rule needed)") from e
    except OSError as e:
        if e.errno == errno.EBUSY:
            raise VfioError(f"open {path}", e.errno, "another process holds it") from e
        raise VfioError(f"open {path}", e.errno or errno.EIO) from e


class _Fd:
    """An owned file descriptor, closed once."""

    fd: int

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def __enter__(self) -> _Fd:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(frozen=True)
class IommuInfo:
    """VFIO_IOMMU_GET_INFO: supported IOVA page sizes (bitmap) and usable IOVA ranges
    (half-open ``(start, end)``; the kernel excludes e.g. the MSI window)."""

    iova_pgsizes: int
    iova_ranges: tuple[tuple[int, int], ...]

    @property
    def min_pgsize(self) -> int:
        return self.iova_pgsizes & -self.iova_pgsizes if self.iova_pgsizes else 4096


def parse_iommu_info(buf: bytes | bytearray) -> IommuInfo:
    """Decode a ``vfio_iommu_type1_info`` (with its capability chain, if present)."""
    _argsz, flags, pgsizes, cap_offset, _pad = IOMMU_INFO.unpack_from(buf, 0)
    ranges: list[tuple[int, int]] = []
    seen = 0
    off = cap_offset if flags & VFIO_IOMMU_INFO_CAPS else 0
    while off and off + CAP_HEADER.size <= len(buf) and seen < 64:
        cap_id, _version, nxt = CAP_HEADER.unpack_from(buf, off)
        if cap_id == VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE:
            nr, _ = IOVA_RANGE_CAP.unpack_from(buf, off + CAP_HEADER.size)
            base = off + CAP_HEADER.size + IOVA_RANGE_CAP.size
            for i in range(nr):
                if base + (i + 1) * IOVA_RANGE.size > len(buf):
                    break
                start, end = IOVA_RANGE.unpack_from(buf, base + i * IOVA_RANGE.size)
                ranges.append((start, end + 1))
        off = nxt
        seen += 1
    if not flags & VFIO_IOMMU_INFO_PGSIZES:
        pgsizes = 0
    return IommuInfo(pgsizes, tuple(ranges))


class VfioContainer(_Fd):
    """``/dev/vfio/vfio``: one IOMMU context (type1v2) shared by the groups attached to it."""

    def __init__(self, path: str | Path = "/dev/vfio/vfio") -> None:
        super().__init__(_open(path, "load vfio-pci and boot with the IOMMU on"))
        try:
            version = _ioctl(self.fd, VFIO_GET_API_VERSION, 0, "VFIO_GET_API_VERSION")
            if version != VFIO_API_VERSION:
                raise NoIommu(f"unknown VFIO API version {version}")
            if not _ioctl(
                self.fd, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU, "VFIO_CHECK_EXTENSION"
            ):
                raise NoIommu("VFIO has no type1v2 IOMMU backend (modprobe vfio_iommu_type1)")
        except BaseException:
            self.close()
            raise

    def set_iommu(self, iommu_type: int = VFIO_TYPE1v2_IOMMU) -> None:
        """VFIO_SET_IOMMU (after a group joined the container)."""
        _ioctl(
            self.fd,
            VFIO_SET_IOMMU,
            iommu_type,
            "VFIO_SET_IOMMU",
            "without interrupt remapping set "
            "/sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts to Y",
        )

    def iommu_info(self) -> IommuInfo:
        buf = bytearray(IOMMU_INFO.size)
        IOMMU_INFO.pack_into(buf, 0, IOMMU_INFO.size, 0, 0, 0, 0)
        _ioctl(self.fd, VFIO_IOMMU_GET_INFO, buf, "VFIO_IOMMU_GET_INFO")
        argsz = struct.unpack_from("<I", buf, 0)[0]
        if argsz > len(buf):
            buf = bytearray(argsz)
            IOMMU_INFO.pack_into(buf, 0, argsz, 0, 0, 0, 0)
            _ioctl(self.fd, VFIO_IOMMU_GET_INFO, buf, "VFIO_IOMMU_GET_INFO")
        return parse_iommu_info(buf)

    def map_dma(self, vaddr: int, iova: int, size: int) -> None:
        """VFIO_IOMMU_MAP_DMA, readable and writable by the device (pins the pages)."""
        buf = bytearray(
            DMA_MAP.pack(
                DMA_MAP.size,
                VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
                vaddr,
                iova,
                size,
            )
        )
        _ioctl(
            self.fd,
            VFIO_IOMMU_MAP_DMA,
            buf,
            f"VFIO_IOMMU_MAP_DMA iova=0x{iova:x} size=0x{size:x}",
            "check RLIMIT_MEMLOCK (ulimit -l), page alignment and overlaps",
        )

    def unmap_dma(self, iova: int, size: int) -> int:
        """VFIO_IOMMU_UNMAP_DMA; returns the number of bytes the kernel unmapped."""
        buf = bytearray(DMA_UNMAP.pack(DMA_UNMAP.size, 0, iova, size))
        _ioctl(self.fd, VFIO_IOMMU_UNMAP_DMA, buf, f"VFIO_IOMMU_UNMAP_DMA iova=0x{iova:x}")
        return int(DMA_UNMAP.unpack(buf)[3])


class VfioGroup(_Fd):
    """``/dev/vfio/<group>``."""

    def __init__(self, group: int, dev_dir: str | Path = "/dev/vfio") -> None:
        super().__init__(_open(Path(dev_dir) / str(group), "is the device bound to vfio-pci?"))
        self.group = group

    def status(self) -> int:
        buf = bytearray(GROUP_STATUS.pack(GROUP_STATUS.size, 0))
        _ioctl(self.fd, VFIO_GROUP_GET_STATUS, buf, "VFIO_GROUP_GET_STATUS")
        return int(GROUP_STATUS.unpack(buf)[1])

    @property
    def viable(self) -> bool:
        return bool(self.status() & VFIO_GROUP_FLAGS_VIABLE)

    def set_container(self, container: VfioContainer) -> None:
        buf = bytearray(struct.pack("<i", container.fd))
        _ioctl(self.fd, VFIO_GROUP_SET_CONTAINER, buf, "VFIO_GROUP_SET_CONTAINER")

    def get_device(self, bdf: str) -> VfioDevice:
        buf = bytearray(bdf.encode() + b"\0")
        fd = _ioctl(
            self.fd,
            VFIO_GROUP_GET_DEVICE_FD,
            buf,
            f"VFIO_GROUP_GET_DEVICE_FD {bdf}",
            "is the device bound to vfio-pci and not opened by another process?",
        )
        return VfioDevice(fd)


@dataclass(frozen=True)
class RegionInfo:
    index: int
    flags: int
    size: int
    offset: int

    @property
    def mmappable(self) -> bool:
        return bool(self.flags & VFIO_REGION_INFO_FLAG_MMAP)


@dataclass(frozen=True)
class VfioDeviceInfo:
    flags: int
    num_regions: int
    num_irqs: int

    @property
    def has_reset(self) -> bool:
        return bool(self.flags & VFIO_DEVICE_FLAGS_RESET)


class VfioDevice(_Fd):
    """A VFIO device fd (from a group, or a ``/dev/vfio/devices/vfioN`` cdev)."""

    def info(self) -> VfioDeviceInfo:
        buf = bytearray(DEVICE_INFO.pack(DEVICE_INFO.size, 0, 0, 0, 0, 0))
        _ioctl(self.fd, VFIO_DEVICE_GET_INFO, buf, "VFIO_DEVICE_GET_INFO")
        _argsz, flags, nreg, nirq, _cap, _pad = DEVICE_INFO.unpack(buf)
        return VfioDeviceInfo(flags, nreg, nirq)

    def region_info(self, index: int) -> RegionInfo:
        buf = bytearray(REGION_INFO.pack(REGION_INFO.size, 0, index, 0, 0, 0))
        _ioctl(self.fd, VFIO_DEVICE_GET_REGION_INFO, buf, f"VFIO_DEVICE_GET_REGION_INFO {index}")
        _argsz, flags, idx, _cap, size, offset = REGION_INFO.unpack(buf)
        return RegionInfo(idx, flags, size, offset)

    def mmap_region(self, region: RegionInfo) -> mmap.mmap:
        if not region.mmappable or region.size == 0:
            raise VfioError(
                f"mmap of region {region.index}", errno.EINVAL, "the region is not mmap-able"
            )
        try:
            return mmap.mmap(
                self.fd,
                region.size,
                flags=mmap.MAP_SHARED,
                prot=mmap.PROT_READ | mmap.PROT_WRITE,
                offset=region.offset,
            )
        except OSError as e:
            raise VfioError(f"mmap of region {region.index}", e.errno or errno.EIO) from e

    def region_read(self, region: RegionInfo, offset: int, size: int) -> int:
        data = os.pread(self.fd, size, region.offset + offset)
        if len(data) != size:
            raise VfioError(f"read region {region.index} at 0x{offset:x}", errno.EIO)
        return int.from_bytes(data, "little")

    def region_write(self, region: RegionInfo, offset: int, size: int, value: int) -> None:
        try:
            n = os.pwrite(self.fd, value.to_bytes(size, "little"), region.offset + offset)
        except OSError as e:
            raise VfioError(f"write region {region.index} at 0x{offset:x}", e.errno or 5) from e
        if n != size:
            raise VfioError(f"write region {region.index} at 0x{offset:x}", errno.EIO)

    def reset(self) -> None:
        _ioctl(self.fd, VFIO_DEVICE_RESET, 0, "VFIO_DEVICE_RESET")

    # -- iommufd cdev path -------------------------------------------------------------------
    def bind_iommufd(self, iommufd: int) -> int:
        """VFIO_DEVICE_BIND_IOMMUFD; returns the device id inside iommufd."""
        buf = bytearray(BIND_IOMMUFD.pack(BIND_IOMMUFD.size, 0, iommufd, 0))
        _ioctl(self.fd, VFIO_DEVICE_BIND_IOMMUFD, buf, "VFIO_DEVICE_BIND_IOMMUFD")
        return int(BIND_IOMMUFD.unpack(buf)[3])

    def attach_ioas(self, ioas_id: int) -> None:
        buf = bytearray(ATTACH_IOMMUFD_PT.pack(ATTACH_IOMMUFD_PT.size, 0, ioas_id))
        _ioctl(self.fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, buf, "VFIO_DEVICE_ATTACH_IOMMUFD_PT")

    @classmethod
    def open_cdev(cls, path: str | Path) -> VfioDevice:
        return cls(_open(path, "kernel without VFIO device cdev support"))


class Iommufd(_Fd):
    """``/dev/iommu`` with one IO address space (IOAS) for our device."""

    def __init__(self, path: str | Path = "/dev/iommu") -> None:
        super().__init__(_open(path, "kernel without IOMMUFD"))
        try:
            buf = bytearray(IOAS_ALLOC.pack(IOAS_ALLOC.size, 0, 0))
            _ioctl(self.fd, IOMMU_IOAS_ALLOC, buf, "IOMMU_IOAS_ALLOC")
            self.ioas_id = int(IOAS_ALLOC.unpack(buf)[2])
        except BaseException:
            self.close()
            raise

    def map_dma(self, vaddr: int, iova: int, size: int) -> None:
        flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE
        buf = bytearray(IOAS_MAP.pack(IOAS_MAP.size, flags, self.ioas_id, 0, vaddr, size, iova))
        _ioctl(self.fd, IOMMU_IOAS_MAP, buf, f"IOMMU_IOAS_MAP iova=0x{iova:x} size=0x{size:x}")

    def unmap_dma(self, iova: int, size: int) -> int:
        buf = bytearray(IOAS_UNMAP.pack(IOAS_UNMAP.size, self.ioas_id, iova, size))
        _ioctl(self.fd, IOMMU_IOAS_UNMAP, buf, f"IOMMU_IOAS_UNMAP iova=0x{iova:x}")
        return int(IOAS_UNMAP.unpack(buf)[3])


def cdev_path(sysfs_device_dir: Path, dev_dir: str | Path = "/dev/vfio/devices") -> Path | None:
    """``/dev/vfio/devices/vfioN`` of a vfio-pci bound device, when the kernel offers cdevs."""
    vdir = sysfs_device_dir / "vfio-dev"
    if not vdir.is_dir():
        return None
    for entry in sorted(vdir.iterdir()):
        if entry.name.startswith("vfio"):
            path = Path(dev_dir) / entry.name
            return path if path.exists() else None
    return None


def iommufd_offered(dev_iommu: str | Path = "/dev/iommu") -> bool:
    return Path(dev_iommu).exists()
