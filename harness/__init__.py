"""dbc-harness: harness (the binding layer to real controllers, and the application above the
benches).

* :mod:`dbc_harness.harness.binding`: claim, VFIO/sysfs, BAR0 mapping, discovery, restore;
* :mod:`dbc_harness.harness.app`: the CLI, sessions, console, file transfer, views;
* :mod:`dbc_harness.harness.benchmarks`: one module per ``dbc-harness bench NAME``.
"""
