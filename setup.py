"""Installs the repository's folders under one namespace, ``dbc_harness.*`` (metadata: pyproject).

``allocator/`` -> ``dbc_harness.allocator``, ``drivers/`` -> ``dbc_harness.drivers``,
``harness/`` -> ``dbc_harness.harness``, ``fixtures/`` -> ``dbc_harness.fixtures``: nothing is
installed under a bare generic top-level name. Every package below those folders is found here,
so a new subpackage needs no entry anywhere.
"""

from setuptools import find_packages, setup

FOLDERS = ("allocator", "drivers", "harness", "fixtures")

setup(
    packages=[
        f"dbc_harness.{name}"
        for folder in FOLDERS
        for name in (folder, *(f"{folder}.{sub}" for sub in find_packages(folder)))
    ],
    package_dir={f"dbc_harness.{folder}": folder for folder in FOLDERS},
)
