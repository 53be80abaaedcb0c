"""A backend's ``health`` table: the active check the control process runs.

Owns reading and checking it (type, interval, timeout, rise and fall, and for HTTP the
request and the statuses that pass); control/checks.py runs it.
"""

from __future__ import annotations

from trilb.config.schema import Health
from trilb.config.table import Table
from trilb.config.values import parse_choice, parse_int, parse_name, parse_timeout
from trilb.errors import ConfigError

_DEFAULT = Health()


def parse_health(value: object, path: str) -> Health:
    """``health = { type, interval, timeout, rise, fall, path, method, host, expect }``.

    Raises:
      ConfigError: a key is unknown or out of range; an http key on a tcp check.
    """
    t = Table(value, path)
    kind = t.take("type", parse_choice(("tcp", "http"))) or "tcp"
    interval = t.take("interval", parse_timeout) or _DEFAULT.interval
    timeout = t.take("timeout", parse_timeout) or _DEFAULT.timeout
    if timeout > interval:
        raise ConfigError(t.key("timeout"), f"{timeout:g}s is longer than the interval "
                          f"({interval:g}s): checks would overlap")  # fmt: skip
    t.take("rise", parse_int(1, 100))
    t.take("fall", parse_int(1, 100))
    http_keys = ("path", "method", "host", "expect")
    if kind == "tcp":
        t.refuse(http_keys, 'only for type = "http"')
    t.take("path", _path)
    t.take("method", parse_name)
    t.take("host", parse_name)
    t.take("expect", _statuses)
    return t.build(Health)


def _path(value: object, path: str) -> str:
    if (
        not isinstance(value, str)
        or not value.startswith("/")
        or any(c in value for c in " \r\n\t")
    ):
        raise ConfigError(path, f'expected a request path starting with "/", got {value!r}')
    return value


def _statuses(value: object, path: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(path, f"expected a list of status codes, got {value!r}")
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, int) or not 100 <= v <= 599:
            raise ConfigError(f"{path}[{i}]", f"expected a status code (100-599), got {v!r}")
    return tuple(value)
