"""An IP allow-list and maintenance-page plugin for trilb: the third-party example."""

from __future__ import annotations

import dataclasses
import ipaddress

from trilb.errors import ConfigError
from trilb.plugin import CONTINUE, Action, Context, Plugin, Reply, Request

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(value: object, path: str) -> tuple[Network, ...]:
    if not isinstance(value, list):
        raise ConfigError(path, f"expected a list of addresses or networks, got {value!r}")
    out = []
    for i, item in enumerate(value):
        try:
            out.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError:
            raise ConfigError(
                f"{path}[{i}]", f"expected an address or network, got {item!r}"
            ) from None
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class IpAllowSettings:
    # Connections from elsewhere are refused with 403; empty: everyone is allowed.
    allow: tuple[Network, ...] = dataclasses.field(default=(), metadata={"parse": _networks})
    # Every request gets the maintenance page (503) but from ``bypass`` addresses.
    maintenance: bool = False
    bypass: tuple[Network, ...] = dataclasses.field(default=(), metadata={"parse": _networks})
    page: str = "Down for maintenance, back soon.\n"


class IpAllow(Plugin):
    """Refuses connections from outside ``allow``; answers 503 while in maintenance."""

    Settings = IpAllowSettings

    def __init__(self, settings: IpAllowSettings) -> None:
        super().__init__(settings)
        self.settings: IpAllowSettings = settings

    def on_connect(self, ctx: Context) -> Action:
        allow = self.settings.allow
        if allow and not _within(ctx.client_ip, allow):
            return Reply(403, b"forbidden\n", (("content-type", "text/plain"),))
        return CONTINUE

    def on_request(self, ctx: Context, request: Request) -> Action:
        s = self.settings
        if s.maintenance and not _within(ctx.client_ip, s.bypass):
            return Reply(
                503, s.page.encode(), (("content-type", "text/plain"), ("retry-after", "60"))
            )
        return CONTINUE


def _within(address: str, networks: tuple[Network, ...]) -> bool:
    ip = ipaddress.ip_address(address.partition("%")[0])
    return any(ip in net for net in networks)
