"""distblob's HTTP server: the OCI distribution API as an ASGI app.

``create_app(registry, secret=...)`` is the app (run it under any ASGI server);
``distblob serve`` loads a distribution-style YAML config (:mod:`distblob.config`) and runs it
under uvicorn. ``Config``, ``ConfigError`` and ``load_config`` are that module's, still
importable from here, where they used to live.
"""

from __future__ import annotations

from distblob.config import Config, ConfigError, load_config
from distblob.server.app import create_app

__all__ = ["Config", "ConfigError", "create_app", "load_config"]
