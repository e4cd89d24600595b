"""The usage of generations this surface ends itself, from the core's ``RequestDone`` event.

A stop sequence is matched here (:mod:`.stops`), so the surface closes the generation before the
backend's last delta — the one that carries the usage.  Closing it makes the core emit
``RequestDone`` for the request, synchronously, with the prompt's token count: the plugin's
``ddx_llm_observe`` hands that event to :meth:`EndedUsage.observe`, and the shaper reads it right
after the close.  Only requests announced with :meth:`expect` are kept, and each only until
:meth:`take`.
"""

from __future__ import annotations

from ddx_llm.events import Event, RequestDone


class EndedUsage:
    """``RequestDone`` events of the requests whose generation the surface is closing."""

    def __init__(self) -> None:
        self._waiting: dict[str, RequestDone | None] = {}

    def expect(self, request_id: str) -> None:
        """Keep the ``RequestDone`` of ``request_id`` when it comes."""
        self._waiting[request_id] = None

    def observe(self, event: Event) -> None:
        if isinstance(event, RequestDone) and event.request.id in self._waiting:
            self._waiting[event.request.id] = event

    def take(self, request_id: str) -> RequestDone | None:
        """The kept event (None if none came), forgetting the request."""
        return self._waiting.pop(request_id, None)
