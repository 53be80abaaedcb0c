"""Finding a plugin class from the ``type`` of a ``[plugins.NAME]`` table.

A type is a name in the ``trilb.plugins`` entry-point group (the first-party plugins
register there too, from trilb's own package metadata, exactly as a third-party package
does), or a dotted path to the class: ``package.module:Class`` or
``package.module.Class``. Importing a plugin's module is its business; a failure is a
config error naming the key.
"""

from __future__ import annotations

import importlib
import importlib.metadata

from trilb.errors import ConfigError
from trilb.plugin.api import Plugin

GROUP = "trilb.plugins"


def find_plugin(type_name: str, path: str) -> type[Plugin]:
    """The Plugin subclass ``type_name`` names; ``path`` is the key it came from.

    Raises:
      ConfigError: no such plugin, it fails to import, or it is not a Plugin.
    """
    target = None
    for entry in importlib.metadata.entry_points(group=GROUP):
        if entry.name == type_name:
            target = entry.value
            break
    if target is None:
        if "." not in type_name and ":" not in type_name:
            known = ", ".join(sorted(available())) or "none installed"
            raise ConfigError(path, f'unknown plugin type "{type_name}" (known: {known}; or '
                              '"package.module:Class")')  # fmt: skip
        target = type_name
    module_name, sep, attr = target.partition(":")
    if not sep:
        module_name, _, attr = target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, attr)
    except Exception as exc:  # (a plugin's module may fail in any way: say which)
        raise ConfigError(path, f'cannot load plugin "{type_name}" ({target}): {exc}') from exc
    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        raise ConfigError(path, f'"{target}" is not a trilb.plugin.Plugin subclass')
    return cls


def available() -> list[str]:
    """The plugin types installed under the entry-point group."""
    return [entry.name for entry in importlib.metadata.entry_points(group=GROUP)]
