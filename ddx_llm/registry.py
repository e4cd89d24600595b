"""The model registry: the curated list of models in ``conf/models.toml``."""

from __future__ import annotations

from collections import Counter
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PositiveInt


class ModelEntry(BaseModel):
    """One registry entry: the OpenAI model fields plus the registry extras.

    ``path`` (a local folder) and ``options`` (a free table) are for backends; clients never see
    them.  Unknown keys are errors so that a typo in ``models.toml`` is caught at start-up.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    owned_by: str = "ddx-llm"
    created: int = 0
    family: str
    arch: str
    total_params_b: float = Field(ge=0)
    quantization: str
    context_window: PositiveInt
    multimodal: bool = False
    label: str
    path: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        """The entry as ``GET /v1/models`` shows it."""
        return {
            "id": self.id,
            "object": "model",
            "created": self.created,
            "owned_by": self.owned_by,
            **self.model_dump(exclude={"id", "owned_by", "created", "path", "options"}),
        }


class Registry:
    """An ordered, id-indexed collection of :class:`ModelEntry`."""

    def __init__(self, entries: list[ModelEntry]) -> None:
        self._entries = {entry.id: entry for entry in entries}
        dupes = [model_id for model_id, n in Counter(e.id for e in entries).items() if n > 1]
        if dupes:
            raise ValueError(f"duplicate model ids: {', '.join(sorted(dupes))}")

    def get(self, model_id: str) -> ModelEntry | None:
        return self._entries.get(model_id)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._entries

    def __iter__(self):
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def first(self) -> ModelEntry:
        return next(iter(self._entries.values()))
