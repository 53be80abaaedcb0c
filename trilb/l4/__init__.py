"""Layer 4 proxying: TCP relay (and later UDP, PROXY protocol)."""
