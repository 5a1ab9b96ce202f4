"""cpuver: versioned CPU models for virtual machines, kept stable for a guest's whole life."""

__version__ = "0.1.0"
