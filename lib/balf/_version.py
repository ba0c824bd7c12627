"""The library version, in one place (read by ``pyproject.toml`` and the cache keys)."""

__version__ = "0.2.0"
