"""The ``waf`` plugin: request rules with anomaly scoring (rules: trilb_plugins.wafrules).

    [plugins.waf]
    mode = "block"             # or "detect": log, never block
    rules = "waf_rules.toml"   # a rule file; default: trilb's own set (waf_rules.toml here)
    threshold = 5              # the anomaly score that blocks
    status = 403
    body_limit = 65536         # bytes of a request body inspected (0: bodies are not)

Each match is logged (rule id, message, target, the matched fragment, truncated). In
block mode a request whose score reaches the threshold, or that matched a ``block``
rule, is answered ``status`` and never reaches a backend. A request with a body is
judged once its first ``body_limit`` bytes (or the whole body, if shorter) are in:
trilb holds them back until then, so a blocked body reaches no backend either.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from importlib import resources

from trilb.errors import ConfigError
from trilb.plugin import CONTINUE, Action, BodyAction, Context, Continue, Plugin, Reply, Request
from trilb_plugins.wafrules import Parts, Rule, evaluate, load_rules

log = logging.getLogger("trilb.waf")


def _mode(value: object, path: str) -> str:
    if value not in ("block", "detect"):
        raise ConfigError(path, f'expected "block" or "detect", got {value!r}')
    return str(value)


def _rules(value: object, path: str) -> tuple[Rule, ...]:
    if not isinstance(value, str) or not value:
        raise ConfigError(path, f"expected a rule file, got {value!r}")
    try:
        with open(value, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(path, f"cannot read {value}: {exc.strerror}") from None
    return load_rules(text, os.path.basename(value))


def default_rules() -> tuple[Rule, ...]:
    """trilb's own rule set."""
    text = resources.files("trilb_plugins").joinpath("waf_rules.toml").read_text("utf-8")
    return load_rules(text, "waf_rules.toml")


@dataclasses.dataclass(frozen=True)
class WafSettings:
    mode: str = dataclasses.field(default="block", metadata={"parse": _mode})
    rules: tuple[Rule, ...] = dataclasses.field(default=(), metadata={"parse": _rules})
    threshold: int = 5
    status: int = 403
    body_limit: int = 65536


class Waf(Plugin):
    """Scores each request head against the rules; blocks or logs."""

    Settings = WafSettings

    def __init__(self, settings: WafSettings) -> None:
        super().__init__(settings)
        self.settings: WafSettings = settings
        self.rules = settings.rules or default_rules()
        self.block = settings.mode == "block"
        if settings.body_limit < 0:
            raise ValueError(f"body_limit must be >= 0, got {settings.body_limit}")
        self.request_body_buffer = settings.body_limit
        # This instance's key in a request's vars (two waf instances may judge one).
        self.key = f"waf.{id(self)}"
        self.reply = Reply(settings.status, b"request blocked\n", (("content-type", "text/plain"),))

    def inspect(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes = b"",
        body_whole: bool = True,
    ) -> tuple[bool, list[str]]:
        """(block it, log lines): the decision for one request (``body``: its start,
        ``body_whole``: all of it)."""
        path, _, query = target.partition("?")
        parts = Parts(method, path, query, headers, body.decode("latin-1"), body_whole)
        score, matches, blocked = evaluate(self.rules, parts)
        lines = [f"rule {m.rule.id} ({m.rule.msg}) in {m.target}: {m.fragment!r}" for m in matches]
        return blocked or score >= self.settings.threshold, lines

    def on_request(self, ctx: Context, request: Request) -> Action:
        if request.has_body and self.settings.body_limit:
            # Judged with the body's start, in on_request_body (before any backend).
            ctx.vars[self.key] = (request.method, request.target, request.items())
            return CONTINUE
        return self._judge(ctx, request.method, request.target, request.items(), b"", True)

    def on_request_body(self, ctx: Context, chunk: bytes, end: bool) -> BodyAction:
        pending = ctx.vars.pop(self.key, None)
        if pending is None:  # (judged already: the rest of the body passes)
            return CONTINUE
        method, target, headers = pending
        limit = self.settings.body_limit
        return self._judge(ctx, method, target, headers, chunk[:limit], end and len(chunk) <= limit)

    def _judge(
        self,
        ctx: Context,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
        whole: bool,
    ) -> Reply | Continue:
        bad, lines = self.inspect(method, target, headers, body, whole)
        path = target.partition("?")[0][:200]
        for line in lines:
            log.warning("waf %s: %s %s: %s", "block" if bad and self.block else "detect",
                        ctx.client_ip, path, line)  # fmt: skip
        if lines:  # the rule ids, in the access log: "rule 942100 (...) in ..."
            verdict = "block" if bad and self.block else "detect"
            ctx.notes["waf"] = f"{verdict}:{','.join(line.split(' ', 2)[1] for line in lines)}"
        if bad and self.block:
            return self.reply
        return CONTINUE
