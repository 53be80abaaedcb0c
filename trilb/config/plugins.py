"""The ``[plugins.NAME]`` tables and the ``plugins`` lists that use them.

Owns reading each instance table (``type``, by default the table's name, and the rest
as the plugin's settings) and checking every list that names instances. A plugin's
settings schema belongs to the plugin, so the class is found and the settings read
here, at load (trilb/plugin/registry.py, trilb/plugin/settings.py): `trilb check`
then reports a bad setting with its key path, as for every other key.
"""

from __future__ import annotations

from collections.abc import Mapping

from trilb.config.schema import Backend, Frontend, PluginSpec
from trilb.config.table import Table
from trilb.config.values import parse_name
from trilb.errors import ConfigError


def parse_plugin(name: str, t: Table) -> PluginSpec:
    """One ``[plugins.NAME]`` table.

    Raises:
      ConfigError: the type cannot be found or loaded, or a setting is wrong.
    """
    # (Imported here: the plugin API sits above the config layer, which finds plugins
    # only for this, at load.)
    from trilb.plugin.registry import find_plugin
    from trilb.plugin.settings import parse_settings

    kind = t.take("type", parse_name) or name
    cls = find_plugin(kind, t.key("type") if "type" in t.raw else t.path)
    raw = {k: v for k, v in t.raw.items() if k != "type"}
    settings = parse_settings(cls.Settings, raw, t.path)
    t.used.update(raw)
    try:  # each worker makes its own; one made now says whether they will start
        cls(settings)
    except Exception as exc:
        raise ConfigError(t.path, f'plugin "{kind}" refused its settings: {exc}') from exc
    return PluginSpec(name=name, type=kind, cls=cls, settings=settings)


def parse_plugin_list(value: object, path: str) -> tuple[str, ...]:
    """A ``plugins`` list: instance names, in order, each once."""
    if not isinstance(value, list):
        raise ConfigError(path, f"expected a list of plugin instance names, got {value!r}")
    names = tuple(parse_name(v, f"{path}[{i}]") for i, v in enumerate(value))
    for i, n in enumerate(names):
        if n in names[:i]:
            raise ConfigError(f"{path}[{i}]", f'plugin "{n}" listed twice')
    return names


def check_plugin_references(
    fe: Frontend, plugins: Mapping[str, PluginSpec], backends: Mapping[str, Backend]
) -> None:
    """Every instance a frontend or its routes list is defined; none of them serves
    requests that go to an HTTP/2 backend (not run on that path yet); a tcp frontend's
    implement on_connect (the one phase that runs there)."""
    if fe.plugins or any(r.plugins for r in fe.routes):
        uses = [(f"frontends.{fe.name}.default_backend", fe.default_backend, fe.plugins)]
        uses += [(f"frontends.{fe.name}.routes[{r.index}].backend", r.backend,
                  fe.plugins + r.plugins) for r in fe.routes]  # fmt: skip
        for path, name, listed in uses:
            if listed and name in backends and backends[name].protocol == "h2":
                raise ConfigError(path, f'backend "{name}" has protocol = "h2": plugins do '
                                  "not run for its requests yet")  # fmt: skip
    lists = [(f"frontends.{fe.name}.plugins", fe.plugins)]
    lists += [(f"frontends.{fe.name}.routes[{r.index}].plugins", r.plugins) for r in fe.routes]
    for path, names in lists:
        for i, n in enumerate(names):
            if n not in plugins:
                known = ", ".join(f'"{p}"' for p in plugins) or "none defined"
                raise ConfigError(f"{path}[{i}]", f'unknown plugin instance "{n}" '
                                  f"([plugins.*]: {known})")  # fmt: skip
            if fe.mode != "http" and not _implements(plugins[n].cls, "on_connect"):
                raise ConfigError(f"{path}[{i}]", f'plugin "{n}" has no on_connect, the only '
                                  f'phase a mode "{fe.mode}" frontend runs')  # fmt: skip


def _implements(cls: type, phase: str) -> bool:
    from trilb.plugin.api import Plugin  # (see parse_plugin)

    return getattr(cls, phase) is not getattr(Plugin, phase)
