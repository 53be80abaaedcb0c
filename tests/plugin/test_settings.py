"""Plugin settings read into their dataclasses, with key-path errors; no sockets."""

from __future__ import annotations

import dataclasses
import re

import pytest

from trilb.config.values import parse_duration
from trilb.errors import ConfigError
from trilb.plugin.settings import parse_settings


@dataclasses.dataclass(frozen=True)
class Inner:
    name: str
    size: int = 1


@dataclasses.dataclass(frozen=True)
class Outer:
    label: str
    on: bool = False
    ratio: float = 0.5
    tags: tuple[str, ...] = ()
    table: dict[str, str] = dataclasses.field(default_factory=dict)
    inner: Inner | None = None
    many: tuple[Inner, ...] = ()
    wait: float = dataclasses.field(default=1.0, metadata={"parse": parse_duration})
    with_: str = dataclasses.field(default="", metadata={"key": "with"})


def test_every_supported_type_is_read() -> None:
    raw = {"label": "x", "on": True, "ratio": 2, "tags": ["a", "b"], "table": {"K": "v"},
           "inner": {"name": "n"}, "many": [{"name": "m", "size": 3}], "wait": "250ms",
           "with": "w"}  # fmt: skip
    got = parse_settings(Outer, raw, "plugins.p")
    assert got == Outer("x", True, 2.0, ("a", "b"), {"K": "v"}, Inner("n"), (Inner("m", 3),),
                        0.25, "w")  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "path", "fragment"),
    [
        ({}, "plugins.p.label", "required"),
        ({"label": 1}, "plugins.p.label", "expected a string"),
        ({"label": "x", "on": "yes"}, "plugins.p.on", "expected true or false"),
        ({"label": "x", "ratio": True}, "plugins.p.ratio", "expected a number"),
        ({"label": "x", "tags": "a"}, "plugins.p.tags", "expected an array"),
        ({"label": "x", "tags": ["a", 2]}, "plugins.p.tags[1]", "expected a string"),
        ({"label": "x", "table": {"a b": 1}}, 'plugins.p.table."a b"', "expected a string"),
        ({"label": "x", "inner": {"size": 2}}, "plugins.p.inner.name", "required"),
        ({"label": "x", "many": [{"name": "m", "size": "big"}]}, "plugins.p.many[0].size",
         "expected an integer"),
        ({"label": "x", "wait": "soon"}, "plugins.p.wait", "a duration"),
        ({"label": "x", "labl": "y"}, "plugins.p.labl", "unknown key"),
        ({"label": "x", "with_": "y"}, "plugins.p.with_", "unknown key"),
    ],
)  # fmt: skip
def test_errors_name_the_key(raw: dict[str, object], path: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_settings(Outer, raw, "plugins.p")
    assert err.value.path == path
    assert re.search(re.escape(fragment), err.value.message)
