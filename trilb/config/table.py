"""Reading one raw TOML table: its key path, the keys consumed, and unknown-key errors.

Owns the bookkeeping every table parser shares (config/load.py, config/http.py): each
key a parser takes is parsed with its dotted path, and finish() rejects whatever was
left. It knows no particular table and holds no defaults (config/schema.py does).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from trilb.errors import ConfigError

T = TypeVar("T")

# Keys of the public contract (DESIGN.md) that later versions implement; naming them
# gives a clearer error than "unknown key".
NOT_YET: dict[str, str] = {}


class Table:
    """A raw TOML table being read: tracks the key path and which keys were used.

    Args:
      raw: the TOML value; anything but a table is a ConfigError at ``path``.
      path: the table's dotted key path ("" for the document itself).

    Raises:
      ConfigError: ``raw`` is not a table.
    """

    def __init__(self, raw: object, path: str) -> None:
        if not isinstance(raw, dict):
            raise ConfigError(path, f"expected a table, got {raw!r}")
        self.raw: dict[str, Any] = raw
        self.path = path
        self.used: set[str] = set()
        self.values: dict[str, Any] = {}

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def take(self, name: str, parse: Callable[[object, str], T]) -> T | None:
        """Parse ``name`` if present; remember the result for build()."""
        self.used.add(name)
        if name not in self.raw:
            return None
        value = parse(self.raw[name], self.key(name))
        self.values[name] = value
        return value

    def refuse(self, names: tuple[str, ...], reason: str) -> None:
        """Reject the first of ``names`` present in the table, for ``reason``."""
        for name in names:
            if name in self.raw:
                raise ConfigError(self.key(name), reason)

    def finish(self) -> None:
        """Reject every key no parser took.

        Raises:
          ConfigError: naming the first such key, and what was expected instead.
        """
        for name in self.raw:
            if name in self.used:
                continue
            if name in NOT_YET:
                raise ConfigError(self.key(name), f"{NOT_YET[name]} not supported yet")
            allowed = ", ".join(sorted(self.used)) or "none"
            raise ConfigError(self.key(name), f"unknown key (expected one of: {allowed})")

    def build(self, cls: Callable[..., T], **known: Any) -> T:
        """finish(), then ``cls(**known, **parsed values)``: keys left out keep defaults."""
        self.finish()
        return cls(**known, **self.values)
