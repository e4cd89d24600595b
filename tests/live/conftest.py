"""Fixtures of the playground's browser tests (test_playground_*.py): one headless Chromium
per test module, and the session's screenshot folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from browser.playground_page import headless_chromium, screenshot_folder
from browser.playwright_driver import Browser


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    with headless_chromium() as browser:
        yield browser


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return screenshot_folder(tmp_path_factory)
