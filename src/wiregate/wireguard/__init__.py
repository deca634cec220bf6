"""Built-in userspace WireGuard: a sans-I/O core plus TUN, UDP and UAPI adapters."""
