"""A plugin's settings: its ``[plugins.NAME]`` table read into its Settings dataclass.

Owns the mapping from TOML values to the annotated field types, with the config's
key-path errors (``plugins.sticky.max_age: expected an integer, got "x"``). Field types
understood: str, int, float, bool, tuple[T, ...] (a TOML array), dict[str, T] (a TOML
table), T | None, and another dataclass (a nested table); any other field gives its
own parser as ``field(metadata={"parse": fn})``, fn(value, path) -> the value (trilb's
own, such as trilb.config.values.parse_duration, fit), and ``metadata={"key": "with"}``
names a key Python reserves. Unknown keys are errors.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from trilb.errors import ConfigError

T = TypeVar("T")


def parse_settings(cls: type[T], raw: object, path: str) -> T:
    """``raw`` (a TOML table) as an instance of the dataclass ``cls``.

    Raises:
      ConfigError: a key is unknown, missing or of the wrong type, naming its path.
    """
    if not isinstance(raw, dict):
        raise ConfigError(path, f"expected a table, got {raw!r}")
    hints = typing.get_type_hints(cls)
    # A field's TOML key is its name, or metadata "key" (for a name Python reserves).
    fields = {f.metadata.get("key", f.name): f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in raw:
        if key not in fields:
            allowed = ", ".join(sorted(fields)) or "none"
            raise ConfigError(_key(path, key), f"unknown key (expected one of: {allowed})")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        if name in raw:
            parse = f.metadata.get("parse")
            value = raw[name]
            key = _key(path, name)
            values[f.name] = parse(value, key) if parse else _value(hints[f.name], value, key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(_key(path, name), "required")
    return cls(**values)


def _key(path: str, name: str) -> str:
    return f"{path}.{name}"


def _value(kind: Any, value: object, path: str) -> Any:
    origin = typing.get_origin(kind)
    if origin in (types.UnionType, typing.Union):
        options = [k for k in typing.get_args(kind) if k is not type(None)]
        if value is None:
            return None
        return _value(options[0], value, path)
    if dataclasses.is_dataclass(kind) and isinstance(kind, type):
        return parse_settings(kind, value, path)
    if origin in (tuple, list):
        args = typing.get_args(kind)
        if not isinstance(value, list):
            raise ConfigError(path, f"expected an array, got {value!r}")
        item = args[0] if args else Any
        return tuple(_value(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        args = typing.get_args(kind)
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a table, got {value!r}")
        item = args[1] if len(args) == 2 else Any
        return {str(k): _value(item, v, _key(path, _quoted(k))) for k, v in value.items()}
    if kind is Any:
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"expected an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(path, f"expected a number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"expected a string, got {value!r}")
        return value
    raise ConfigError(path, f"the plugin declares a field of type {kind!r} with no parser")


def _quoted(key: str) -> str:
    """A table key as TOML would write it in a dotted path."""
    bare = key.replace("-", "").replace("_", "").isalnum()
    return key if bare else f'"{key}"'
