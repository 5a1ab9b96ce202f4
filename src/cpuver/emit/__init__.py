"""Turn resolutions into what QEMU and libvirt read: a ``-cpu`` argument and ``<cpu>`` XML."""
