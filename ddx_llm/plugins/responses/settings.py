"""``[responses]``: where stored responses live and how long they are kept."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from ddx_llm.config import SectionSettings

SECTION = "responses"
REDIS_SCHEMES = ("redis", "rediss", "unix")


class ResponsesSettings(SectionSettings):
    """``[responses]`` (variables ``DDX_LLM_RESPONSES_<KEY>``).

    Stored responses go to an SQLite file in ``data_dir`` unless ``storage_uri`` names a Redis
    server, which replicas then share.  ``max_age_hours`` and ``max_count`` bound what is kept:
    a response older than ``max_age_hours`` is gone, and each client identity keeps its newest
    ``max_count`` responses (per identity, so one key's traffic never pushes another key's
    conversations out).
    """

    data_dir: Path = Path("data/responses")
    """Folder of the SQLite file ``responses.sqlite3`` (relative paths: to the project folder,
    the parent of ``conf/``); created when missing."""
    storage_uri: str = ""
    """Empty: SQLite in ``data_dir``.  ``redis://[:password@]host:6379/0``, ``rediss://`` (TLS)
    or ``unix:///path/redis.sock``: Redis, shared by every replica pointed at it."""
    namespace: str = Field(default="ddx_llm", min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    """Key prefix in a shared Redis (keys are ``<namespace>:responses:…``)."""
    socket_timeout: float = Field(default=2.0, gt=0, le=60)
    """Redis: seconds to wait for a connection or an answer before 503 ``store_unavailable``."""
    max_age_hours: float = Field(default=720.0, gt=0)
    """A stored response is dropped this long after it was created (720 h = OpenAI's 30 days)."""
    max_count: int = Field(default=1000, ge=1)
    """Stored responses kept per client identity; past it the oldest are dropped."""

    @field_validator("storage_uri")
    @classmethod
    def _known_scheme(cls, uri: str) -> str:
        uri = uri.strip()
        if uri and urlsplit(uri).scheme not in REDIS_SCHEMES:
            raise ValueError(
                "storage_uri takes a Redis URL (redis://host:6379/0, rediss://…, unix:///…); "
                "leave it empty for SQLite in data_dir"
            )
        return uri

    @property
    def max_age_seconds(self) -> float:
        return self.max_age_hours * 3600
