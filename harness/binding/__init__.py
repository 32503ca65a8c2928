"""dbc-harness: the binding layer (real controllers, below the benches).

One job per module:

* :mod:`.discovery`: ``list_controllers() -> list[ControllerInfo]`` (pyudev + sysfs);
* :mod:`.claim`: ``claim(bdf, mode="auto"|"vfio"|"sysfs", unsafe=False, force=False)``
  -> :class:`~.claim.Claim` (context manager: ``.mmio``, ``.dma``, ``.info``);
* :mod:`.restore`: ``restore_all(state_dir=None) -> list[str]``;
  ``python -m dbc_harness.harness.binding.restore``;
* helpers: :mod:`.sysfs` (/sys/bus/pci), :mod:`.state` (state files), :mod:`.checks` (refusal
  checks), :mod:`.vfio` (VFIO/iommufd ioctls), :mod:`.mmio` (BAR0 as an Mmio),
  :mod:`.dma_mapper` (IOVA mapper), :mod:`.pci` (config-space names), :mod:`.errors`
  (HarnessError family).
"""
