"""gpushop: the Cloud GPU Shopper."""

__version__ = "0.1.0"
