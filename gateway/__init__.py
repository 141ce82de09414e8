"""Gateway: a reverse-proxy authentication gateway with server-side sessions."""

__version__ = "0.1.0"
