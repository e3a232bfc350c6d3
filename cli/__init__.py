"""`hv`, Hypervisor's command line: a client of the HTTP API, nothing more."""
