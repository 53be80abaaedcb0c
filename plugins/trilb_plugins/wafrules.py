"""The WAF's rules and their evaluation, sans I/O: a request's parts in, the matches out.

A rule file is TOML, an array of ``[[rule]]`` tables:

    [[rule]]
    id = 1001                      # unique; logged with each match
    msg = "SQL injection"          # logged
    targets = ["args", "path"]     # what is looked at (below)
    transforms = ["url_decode", "lowercase"]   # applied in order to each value first
    operator = "sqli"              # contains | begins_with | equals | regex | in_list
                                   # | sqli | xss | traversal | rfi | cmdi | scanner
    value = "..."                  # the operand: a string, or a list for in_list
    score = 5                      # added to the request's anomaly score on a match
    action = "score"               # score | block | log | allow

Targets: ``method``, ``path``, ``query`` (the raw query string), ``args`` (query argument
values), ``arg_names``, ``headers`` (every value), ``header_names``, ``headers:NAME`` (one
field), ``cookies`` (values), ``cookie_names``, and the sizes ``path_length``,
``arg_count``, ``header_length`` (compared with ``greater`` / ``less``). The request body,
as far as the plugin's ``body_limit`` reaches: ``body`` (its text), ``body_args`` (the
values of an ``application/x-www-form-urlencoded`` body's fields, or every string of a
JSON body), ``body_arg_names`` (field names, JSON keys), ``body_arg_count``. A body of
another type has no ``body_args``: only ``body`` sees it. Transforms:
``url_decode`` (repeated while it changes, at most 3 times), ``lowercase``,
``html_entity_decode``, ``normalize_path`` (collapse ``//``, ``/./``, backslashes),
``compress_whitespace``, ``remove_comments`` (SQL and C comments). Actions: ``score``
adds to the anomaly score (the request is blocked when it reaches the threshold);
``block`` blocks at once; ``log`` only logs; ``allow`` stops the evaluation and lets the
request through.
"""

from __future__ import annotations

import dataclasses
import functools
import html
import json
import re
import tomllib
from collections.abc import Callable, Iterable, Sequence
from urllib.parse import unquote_plus

import re2  # type: ignore[import-untyped]

from trilb.errors import ConfigError

ACTIONS = ("score", "block", "log", "allow")
TRANSFORMS: dict[str, Callable[[str], str]] = {}
_SIZE_TARGETS = ("path_length", "arg_count", "header_length", "body_arg_count")


def _transform(name: str) -> Callable[[Callable[[str], str]], Callable[[str], str]]:
    def register(fn: Callable[[str], str]) -> Callable[[str], str]:
        TRANSFORMS[name] = fn
        return fn

    return register


@_transform("url_decode")
def _url_decode(value: str) -> str:
    for _ in range(3):  # double encoding is an evasion: decode while it changes
        decoded = unquote_plus(value)
        if decoded == value:
            break
        value = decoded
    return value


@_transform("lowercase")
def _lowercase(value: str) -> str:
    return value.lower()


@_transform("html_entity_decode")
def _html_entity_decode(value: str) -> str:
    return html.unescape(value)


_SLASHES = re.compile(r"[\\/]+")


@_transform("normalize_path")
def _normalize_path(value: str) -> str:
    return _SLASHES.sub("/", value).replace("/./", "/")


_SPACES = re.compile(r"\s+")


@_transform("compress_whitespace")
def _compress_whitespace(value: str) -> str:
    return _SPACES.sub(" ", value)


_COMMENTS = re.compile(r"/\*.*?\*/|--[^\n]*$|#[^\n]*$", re.S | re.M)
_INLINE = re.compile(r"/\*.*?\*/", re.S)


@_transform("remove_comments")
def _remove_comments(value: str) -> str:
    return _COMMENTS.sub(" ", value)


@_transform("strip_inline_comments")
def _strip_inline_comments(value: str) -> str:
    """``UN/**/ION`` -> ``UNION``: comments that split keywords (an evasion)."""
    return _INLINE.sub("", value)


# --- detectors: each a regex over the transformed (decoded, lowercased) value -------------


class Detector:
    """A detector's pattern, searched with Python's re in a short value and with RE2
    (google-re2) in a longer one. re tries every alternative at every position: on a
    1 KiB value that is 100-670 µs per detector where RE2's DFA takes ~10 µs in one
    pass, and it never backtracks catastrophically on an attacker's input; but each
    RE2 call costs ~5 µs, more than re spends on a short header value."""

    __slots__ = ("long", "pattern", "short")

    SHORT = 32  # characters; the crossover measured on the corpora (docs/benchmarks.md)

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.short = re.compile(pattern)
        self.long = re2.compile(pattern)

    def search(self, value: str) -> str | None:
        """The first match's text, or None."""
        if len(value) <= self.SHORT:
            m = self.short.search(value)
        else:
            try:
                m = self.long.search(value)
            except UnicodeEncodeError:  # (a lone surrogate, from a JSON "\ud800")
                m = self.short.search(value)
        return None if m is None else str(m.group(0))


# SQL needs SQL syntax, not SQL words: "select a plan" or "O'Reilly" must pass.
SQLI = Detector(
    r"\bunion\b[\s(]+(all\s+|distinct\s+)?select\b"
    r"|\bselect\b[\s\S]{1,200}?\bfrom\b[\s\S]{0,100}?(\bwhere\b|\binformation_schema\b|\w+\s*(;|$))"
    r"|['\"`)]\s*(or|and|xor|\|\||&&)\s*[('\"`]?\s*[\w'\"]+\s*[('\"`]?\s*(=|<|>|<>|!=|like\b|\bis\b)"
    r"|['\"`)]\s*(or|and)\s+(true|false|not|\d+\b)"
    r"|['\"`]\s*;\s*(drop|delete|insert|update|alter|create|truncate|exec|shutdown|declare)\b"
    r"|\b(sleep|benchmark|pg_sleep|waitfor\s+delay|load_file|extractvalue|updatexml)\s*\("
    r"|\bwaitfor\s+delay\s+'"
    r"|\b(information_schema|pg_catalog|sysobjects|mysql\.user|xp_cmdshell)\b"
    r"|@@(version|datadir|hostname|basedir)\b"
    r"|(^|[;\d'\"`)])\s*;\s*(drop|truncate|alter)\s+(table|database|schema)\b"
    r"|\d\s*;\s*(drop|delete|insert|update|shutdown|select)\b"
    r"|\b(or|and)\s+\d+\s*(=|<|>|<>|!=)\s*\d+"
    r"|\bfloor\s*\(\s*rand\s*\(|\bconcat\s*\(\s*(version|user|database|@@|0x|char)"
    r"|\border\s+by\s+\d+\s*(--|#|/\*)"
    r"|['\"`]\s*(--|#|/\*)"
    r"|\b(char|chr|concat|group_concat)\s*\(\s*(\d|0x|'|select)"
    r"|\binto\s+(out|dump)file\b"
    r"|\b0x[0-9a-f]{8,}\b"
)
XSS = Detector(
    r"<\s*/?\s*(script|iframe|frame|object|embed|svg|math|base|meta|link|style|form|applet)\b"
    r"|<[^>]*\bon[a-z]{3,}\s*="
    r"|\bon(error|load|click|mouseover|focus|blur|submit|toggle|animationstart|pointer\w+)\s*="
    r"|(javascript|vbscript|livescript)\s*:"
    r"|data\s*:\s*text/html"
    r"|\bdocument\s*\.\s*(cookie|domain|write|location)"
    r"|\b(alert|prompt|confirm|eval)\s*(\(|`)"
    r"|\bexpression\s*\("
    r"|<\s*img[^>]+src\s*="
    r"|\bsrcdoc\s*="
    r"|&#x?[0-9a-f]+;?\s*(script|javascript)"
)
TRAVERSAL = Detector(
    r"(^|[/\\=])\.\.[/\\]"
    r"|[/\\]\.\.($|[/\\?])"
    r"|%2e%2e|%252e|\.%2e|%2e\.|%c0%af|%c1%9c|%e0%80%af"
    r"|/etc/(passwd|shadow|hosts|group)|/proc/self/|c:\\windows|boot\.ini|win\.ini"
    r"|\\\\\.\\|/var/log/"
)
RFI = Detector(
    r"(^|=)\s*(https?|ftps?)://[^&]*\?\s*$"
    r"|\b(php|zip|phar|expect|glob|data|file|dict|gopher|jar)://"
    r"|(^|=)\s*(https?|ftps?)://\d{1,3}(\.\d{1,3}){3}"
    r"|\binclude(_once)?\s*\(|\brequire(_once)?\s*\("
    r"|\bjar:(https?|file|ftp):"
)
CMDI = Detector(
    r"(;|\||&|`|\$\()\s*(cat|ls|id|whoami|uname|wget|curl|nc|ncat|netcat|bash|sh|zsh|"
    r"python\d?|perl|ruby|php|chmod|chown|rm|echo|ping|nslookup|ifconfig|ipconfig|powershell|"
    r"cmd(\.exe)?|type|dir|net\s+user|sleep)\b"
    r"|\$\{ifs\}|\$ifs\b|\bbin/(ba)?sh\b|/dev/tcp/|\bnc\s+-[elvnp]"
    r"|\$\((\w|\s)+\)"
    r"|`\s*(cat|ls|id|whoami|uname|sleep|wget|curl|nc|bash|sh|python\d?|perl|ping|echo|rm)\b[^`]*`"
    r"|\b(wget|curl)\s+(-\w+\s+)*https?://"
    r"|\$\{jndi:"
)
SCANNER = Detector(
    r"sqlmap|nikto|nmap|masscan|zgrab|acunetix|nessus|openvas|w3af|wpscan|dirbuster|gobuster|"
    r"feroxbuster|ffuf|nuclei|havij|netsparker|appscan|burpcollaborator|jaeles|whatweb|arachni|"
    r"zap/|owasp[ _-]?zap|skipfish|commix|xsstrike|dirsearch|fimap|joomscan|wfuzz"
)
DETECTORS = {
    "sqli": SQLI,
    "xss": XSS,
    "traversal": TRAVERSAL,
    "rfi": RFI,
    "cmdi": CMDI,
    "scanner": SCANNER,
}
OPERATORS = ("contains", "begins_with", "equals", "regex", "in_list", "greater", "less",
             *DETECTORS)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Rule:
    id: int
    msg: str
    targets: tuple[str, ...]
    operator: str
    value: object = None
    transforms: tuple[str, ...] = ()
    score: int = 5
    action: str = "score"
    matcher: Callable[[str], str | None] = dataclasses.field(default=lambda v: None, compare=False)


@dataclasses.dataclass(frozen=True)
class Parts:
    """What the rules look at in a request (strings, as received)."""

    method: str
    path: str
    query: str
    headers: Sequence[tuple[str, str]]  # (lowercase name, value)
    body: str = ""  # the body inspected (its start), decoded as latin-1
    # The body was inspected whole (a JSON body cut short is not parsed).
    body_whole: bool = True

    def values(self, target: str) -> Iterable[str]:
        """The values of ``target`` (see the module docstring)."""
        if target == "method":
            return (self.method,)
        if target == "path":
            return (self.path,)
        if target == "query":
            return (self.query,) if self.query else ()
        if target == "args":
            return [v for _, v in self.args]
        if target == "arg_names":
            return [k for k, _ in self.args]
        if target == "headers":
            return [v for _, v in self.headers]
        if target == "header_names":
            return [n for n, _ in self.headers]
        if target.startswith("headers:"):
            name = target[8:]
            return [v for n, v in self.headers if n == name]
        if target == "cookies":
            return [v for _, v in self.cookies]
        if target == "cookie_names":
            return [k for k, _ in self.cookies]
        if target == "path_length":
            return (str(len(self.path)),)
        if target == "arg_count":
            return (str(len(self.args)),)
        if target == "header_length":
            return (str(max((len(v) for _, v in self.headers), default=0)),)
        if target == "body":
            return (self.body,) if self.body else ()
        if target == "body_args":
            return [v for _, v in self.body_args]
        if target == "body_arg_names":
            return [k for k, _ in self.body_args]
        if target == "body_arg_count":
            return (str(len(self.body_args)),)
        raise ValueError(target)

    @property
    def content_type(self) -> str:
        return next((v for n, v in self.headers if n == "content-type"), "").lower()

    @functools.cached_property  # (several rules look at it: the JSON is parsed once)
    def body_args(self) -> list[tuple[str, str]]:
        if not self.body:
            return []
        kind = self.content_type.partition(";")[0].strip()
        if kind == "application/x-www-form-urlencoded":
            return _pairs(self.body)
        if kind == "application/json" or kind.endswith("+json"):
            if not self.body_whole:  # cut at body_limit: the strings it holds whole
                return _json_literals(self.body)
            try:
                data = json.loads(self.body.encode("latin-1"))
            except (ValueError, RecursionError):
                return [("", self.body)]  # not JSON after all: one value, inspected whole
            out: list[tuple[str, str]] = []
            _strings(data, "", out)
            return out
        return []

    @property
    def args(self) -> list[tuple[str, str]]:
        return _pairs(self.query)

    @property
    def cookies(self) -> list[tuple[str, str]]:
        out = []
        for n, v in self.headers:
            if n == "cookie":
                for part in v.split(";"):
                    name, _, value = part.strip().partition("=")
                    if name:
                        out.append((name, value))
        return out


def _pairs(text: str) -> list[tuple[str, str]]:
    """``a=1&b=2`` as pairs, raw: the rules' transforms decode (parse_qsl would decode
    once already)."""
    pairs = []
    for part in text.split("&"):
        if part:
            name, _, value = part.partition("=")
            pairs.append((name, value))
    return pairs


_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"')


def _json_literals(text: str) -> list[tuple[str, str]]:
    """The string literals of the start of a JSON document (keys and values alike,
    decoded): what a body cut at the inspection limit still says whole."""
    out = []
    for literal in _LITERAL.findall(text):
        try:
            value = json.loads(literal.encode("latin-1"))
        except ValueError:
            value = literal[1:-1]
        out.append(("", value))
    return out


def _strings(data: object, key: str, out: list[tuple[str, str]]) -> None:
    """Every string of a JSON document, with the key it is under (keys are names too)."""
    if isinstance(data, str):
        out.append((key, data))
    elif isinstance(data, dict):
        for k, v in data.items():
            _strings(v, k, out)
    elif isinstance(data, list):
        for v in data:
            _strings(v, key, out)


TARGETS = ("method", "path", "query", "args", "arg_names", "headers", "header_names",
           "cookies", "cookie_names", "body", "body_args", "body_arg_names",
           *_SIZE_TARGETS)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Match:
    rule: Rule
    target: str
    fragment: str  # what matched, truncated for the log


def load_rules(text: str, path: str) -> tuple[Rule, ...]:
    """Rules from a rule file's text; ``path`` names it in errors.

    Raises:
      ConfigError: the file is not TOML or a rule is invalid (its index and key named).
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, f"not valid TOML: {exc}") from None
    rules = raw.get("rule")
    if not isinstance(rules, list) or not rules:
        raise ConfigError(path, "expected [[rule]] tables")
    out = []
    seen: set[int] = set()
    for i, r in enumerate(rules):
        rule = _rule(r, f"{path}: rule[{i}]")
        if rule.id in seen:
            raise ConfigError(f"{path}: rule[{i}].id", f"duplicate rule id {rule.id}")
        seen.add(rule.id)
        out.append(rule)
    return tuple(out)


def _rule(r: object, path: str) -> Rule:
    if not isinstance(r, dict):
        raise ConfigError(path, f"expected a table, got {r!r}")
    known = {"id", "msg", "targets", "transforms", "operator", "value", "score", "action"}
    for key in r:
        if key not in known:
            raise ConfigError(
                f"{path}.{key}", f"unknown key (expected one of: {', '.join(sorted(known))})"
            )
    rid, msg, operator = r.get("id"), r.get("msg", ""), r.get("operator")
    if not isinstance(rid, int) or isinstance(rid, bool):
        raise ConfigError(f"{path}.id", f"expected an integer, got {rid!r}")
    targets = r.get("targets")
    if not isinstance(targets, list) or not targets:
        raise ConfigError(f"{path}.targets", "expected a non-empty list of targets")
    for j, t in enumerate(targets):
        if not isinstance(t, str) or not (
            t in TARGETS or (t.startswith("headers:") and len(t) > 8)
        ):
            raise ConfigError(f"{path}.targets[{j}]", f"unknown target {t!r}")
    transforms = r.get("transforms", [])
    for j, t in enumerate(transforms):
        if t not in TRANSFORMS:
            raise ConfigError(
                f"{path}.transforms[{j}]",
                f"unknown transform {t!r} (known: {', '.join(TRANSFORMS)})",
            )
    if operator not in OPERATORS:
        raise ConfigError(
            f"{path}.operator", f"unknown operator {operator!r} (known: {', '.join(OPERATORS)})"
        )
    action = r.get("action", "score")
    if action not in ACTIONS:
        raise ConfigError(f"{path}.action", f"expected one of {', '.join(ACTIONS)}, got {action!r}")
    score = r.get("score", 5)
    if not isinstance(score, int) or isinstance(score, bool) or score < 0:
        raise ConfigError(f"{path}.score", f"expected an integer >= 0, got {score!r}")
    matcher = _matcher(operator, r.get("value"), f"{path}.value")
    return Rule(rid, str(msg), tuple(targets), operator, r.get("value"),
                tuple(transforms), score, action, matcher)  # fmt: skip


def _matcher(operator: str, value: object, path: str) -> Callable[[str], str | None]:
    """A function: transformed value -> the matched fragment, or None."""
    if operator in DETECTORS:
        return DETECTORS[operator].search
    if operator == "in_list":
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise ConfigError(path, "expected a list of strings")
        options = frozenset(value)
        return lambda v: v if v in options else None
    if operator in ("greater", "less"):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(path, "expected an integer")
        limit = value
        if operator == "greater":
            return lambda v: v if int(v) > limit else None
        return lambda v: v if int(v) < limit else None
    if not isinstance(value, str) or not value:
        raise ConfigError(path, "expected a non-empty string")
    text = value
    if operator == "contains":
        return lambda v: text if text in v else None
    if operator == "begins_with":
        return lambda v: text if v.startswith(text) else None
    if operator == "equals":
        return lambda v: v if v == text else None
    try:
        pattern = re.compile(text)
    except re.error as exc:
        raise ConfigError(path, f"invalid regular expression: {exc}") from None
    return lambda v: m.group(0) if (m := pattern.search(v)) else None


def evaluate(rules: Sequence[Rule], parts: Parts) -> tuple[int, list[Match], bool]:
    """Run ``rules`` on ``parts``: (the anomaly score, the matches, blocked by a ``block``
    rule). An ``allow`` match stops the evaluation with what was found so far dropped."""
    score = 0
    matches: list[Match] = []
    cache: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for rule in rules:
        for target in rule.targets:
            key = (target, rule.transforms)
            values = cache.get(key)
            if values is None:
                values = [_apply(rule.transforms, v) for v in parts.values(target)]
                cache[key] = values
            hit = next((f for v in values if (f := rule.matcher(v)) is not None), None)
            if hit is None:
                continue
            if rule.action == "allow":
                return 0, [], False
            matches.append(Match(rule, target, hit[:80]))
            if rule.action == "block":
                return score + rule.score, matches, True
            if rule.action == "score":
                score += rule.score
            break  # one match per rule is enough
    return score, matches, False


def _apply(transforms: Sequence[str], value: str) -> str:
    for name in transforms:
        value = TRANSFORMS[name](value)
    return value
