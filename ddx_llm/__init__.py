"""ddx-llm: an OpenAI-compatible LLM service for MLX, as a minimal ASGI core with pluggy plugins.

``hypercorn ddx_llm:app`` serves :data:`app`.  Importing this package is cheap and has no side
effects: the app is built from ``conf/`` on its first ASGI call (the lifespan start-up).
"""

from __future__ import annotations

__version__ = "0.1.0"

from .asgi import LazyApp, app
from .hookspecs import hookimpl

__all__ = ["LazyApp", "__version__", "app", "hookimpl"]
