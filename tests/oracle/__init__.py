"""Oracle tests: cpuver's bundled catalogs against the real QEMU builds they were imported from."""
