"""What a host can give a guest: the capabilities value type and the probes that fill it."""
