"""distblob's HTTP server: the OCI distribution API as an ASGI app, and its config.

``create_app(registry, secret=...)`` is the app (run it under any ASGI server);
``distblob serve`` loads a distribution-style YAML config and runs it under uvicorn.
"""

from __future__ import annotations

from distblob.server.app import create_app
from distblob.server.config import Config, ConfigError, load_config

__all__ = ["Config", "ConfigError", "create_app", "load_config"]
