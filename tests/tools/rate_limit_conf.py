"""Conf set-up shared by the rate-limit tests (in process and live)."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path
from typing import Any

from support import ROOT, write_conf

KEYS = {"alice": "alice-secret-key", "bob": "bob-secret-key", "carol": "carol-secret-key"}
"""API keys named in ``[auth] api_key_digests``: auth identifies them as alice, bob, carol."""


def sha256(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def enable_rate_limit(conf_dir: Path, *, named_keys: bool = True, **rate_limit: Any) -> None:
    """Load the project's ``plugins/`` folder with ``rate_limit`` enabled (whether or not the
    shipped conf disables it), name :data:`KEYS` in ``[auth]``, and set ``[rate_limit]``."""
    core = tomllib.loads((conf_dir / "ddx-llm.toml").read_text()).get("core", {})
    disabled = [name for name in core.get("disabled_plugins", []) if name != "rate_limit"]
    sections: dict[str, dict[str, Any]] = {
        "core": {"plugins_dir": str(ROOT / "plugins"), "disabled_plugins": disabled},
        "rate_limit": rate_limit,
    }
    if named_keys:
        sections["auth"] = {"api_key_digests": {name: sha256(key) for name, key in KEYS.items()}}
    write_conf(conf_dir, sections)
