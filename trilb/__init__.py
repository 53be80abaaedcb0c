"""trilb: a Layer 4 / Layer 7 load balancer and reverse proxy on trio."""

__version__ = "0.1.0"
