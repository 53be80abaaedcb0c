"""Every example config shipped in contrib/ is valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from trilb.config.load import load_config

CONTRIB = Path(__file__).resolve().parent.parent / "contrib"


@pytest.mark.parametrize("path", sorted(CONTRIB.glob("*.toml")), ids=lambda p: p.name)
def test_contrib_config_is_valid(path: Path) -> None:
    config = load_config(path)
    assert config.frontends, path


def test_contrib_has_configs() -> None:
    assert list(CONTRIB.glob("*.toml"))
