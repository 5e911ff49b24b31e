"""The fcnkit version (one owner; ``fcnkit.__version__`` re-exports it)."""

__version__ = "0.1.0"
