"""The core's request path: the routes every deployment serves (:mod:`.routes`), health and
readiness (:mod:`.health`), the model registry and hot swap (:mod:`.models`), chat completions
(:mod:`.chat`), OpenAI response shaping (:mod:`.shaping`) and JSON body parsing
(:mod:`.json_body`)."""

from .routes import core_routes

__all__ = ["core_routes"]
