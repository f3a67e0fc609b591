"""Fixtures for config tests: write config files under tmp_path, load them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from proxympm.config import ServerConfig, load_config

Write = Callable[..., Path]
Load = Callable[..., ServerConfig]


@pytest.fixture
def write(tmp_path: Path) -> Write:
    """write(text, name="httpd.conf") -> path: a file under tmp_path (dirs made)."""

    def _write(text: str, name: str = "httpd.conf") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    return _write


@pytest.fixture
def load(tmp_path: Path, write: Write) -> Load:
    """load(text, defines=()) -> ServerConfig, with tmp_path as ServerRoot (-d)."""

    def _load(text: str, defines: Sequence[str] = ()) -> ServerConfig:
        write(text)
        return load_config("httpd.conf", defines=defines, server_root=str(tmp_path))

    return _load
