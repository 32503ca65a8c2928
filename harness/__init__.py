"""dbc-harness: harness (the binding layer, the CLI, traces).

Binding layer, one job per module:

* :mod:`harness.discovery`: ``list_controllers() -> list[ControllerInfo]`` (pyudev + sysfs);
* :mod:`harness.claim`: ``claim(bdf, mode="auto"|"vfio"|"sysfs", unsafe=False, force=False)``
  -> :class:`~harness.claim.Claim` (context manager: ``.mmio``, ``.dma``, ``.info``);
* :mod:`harness.restore`: ``restore_all(state_dir=None) -> list[str]``; ``python -m
  harness.restore``;
* helpers: :mod:`~harness.sysfs` (/sys/bus/pci), :mod:`~harness.state` (state files),
  :mod:`~harness.checks` (refusal checks), :mod:`~harness.vfio` (VFIO/iommufd ioctls),
  :mod:`~harness.mmio` (BAR0 as an Mmio), :mod:`~harness.dma_mapper` (IOVA mapper),
  :mod:`~harness.pci` (config-space names), :mod:`~harness.errors` (HarnessError family).
"""
