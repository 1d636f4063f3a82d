"""The engine's user-facing errors."""
from __future__ import annotations


class ConfigError(ValueError):
    """What the caller asked for cannot run: a tp/pp split the model cannot take, MTP without an
    MTP module, decode graphs with pp > 1, a config.json or checkpoint the engine cannot use. The
    message is one line; the CLI reports it without a traceback (any other exception is a bug and
    keeps its traceback). A ValueError, so callers that catch ValueError keep working."""
