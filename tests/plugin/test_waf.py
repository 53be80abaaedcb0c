"""The WAF's rules on the shipped corpora, and its rule-file errors; no sockets."""

from __future__ import annotations

import collections

import pytest
from trilb_plugins.waf import Waf, WafSettings
from trilb_plugins.wafrules import load_rules

from tests.plugin.waf_corpus import attacks, benign, body_attacks, body_benign
from trilb.errors import ConfigError

WAF = Waf(WafSettings())


def test_the_corpora_are_large_enough() -> None:
    assert len(attacks()) >= 200 and len(benign()) >= 200
    assert len({h for _, h in attacks() for h in [repr(h)]}) == len(attacks())  # distinct


def test_every_attack_of_the_corpus_is_blocked() -> None:
    missed = collections.defaultdict(list)
    for category, (method, target, headers) in attacks():
        blocked, _ = WAF.inspect(method, target, headers)
        if not blocked:
            missed[category].append(target[:100] + " " + str(headers[1:])[:80])
    assert not missed, dict(missed)


def test_no_benign_request_of_the_corpus_is_blocked() -> None:
    false_positives = []
    for method, target, headers in benign():
        blocked, lines = WAF.inspect(method, target, headers)
        if blocked:
            false_positives.append((target, lines))
    assert false_positives == []


def test_detect_mode_logs_without_blocking_and_matches_say_what_and_where() -> None:
    method, target, headers = attacks()[0][1]
    blocked, lines = WAF.inspect(method, target, headers)
    assert blocked and lines[0].startswith("rule 1001 (SQL injection") and " in args: " in lines[0]


RULE = '[[rule]]\nid = 1\ntargets = ["args"]\n'


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("x = 1", "expected [[rule]] tables"),
        ('[[rule]]\nid = 1\ntargets = ["bodies"]\noperator = "sqli"\n', "unknown target"),
        (RULE + 'operator = "magic"\n', "unknown operator"),
        (RULE + 'operator = "regex"\nvalue = "("\n', "invalid regular"),
        (RULE + 'operator = "xss"\n' + RULE + 'operator = "xss"\n', "duplicate rule id 1"),
        (RULE + 'operator = "xss"\naction = "drop"\n', "expected one of"),
    ],
)  # fmt: skip
def test_rule_file_errors_say_where(text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_rules(text, "rules.toml")
    assert fragment in str(err.value)
    assert "rules.toml" in str(err.value)


def test_every_body_attack_of_the_corpus_is_blocked() -> None:
    missed = [
        (category, body[:100])
        for category, (method, target, headers, body) in body_attacks()
        if not WAF.inspect(method, target, headers, body)[0]
    ]
    assert missed == []


def test_no_benign_body_of_the_corpus_is_blocked() -> None:
    false_positives = [
        (body[:100], lines)
        for method, target, headers, body in body_benign()
        for blocked, lines in [WAF.inspect(method, target, headers, body)]
        if blocked
    ]
    assert false_positives == []


def test_a_body_cut_at_the_limit_is_still_inspected() -> None:
    # A form body's fields and a JSON body's whole string literals, up to the cut.
    method, target, headers, body = body_attacks()[1][1]  # a form body
    assert WAF.inspect(method, target, headers, body, body_whole=False)[0]
    json_attack = next(b for c, b in body_attacks() if c == "sqli-json")
    cut = json_attack[3] + b' "pad": "' + b"x" * 100  # (an unterminated string at the end)
    assert WAF.inspect(*json_attack[:3], cut, body_whole=False)[0]
    assert WAF.inspect(*json_attack[:3], json_attack[3], body_whole=True)[0]
    benign = b'{"q": "O\'Reilly & sons: select a plan", "pad": "' + b"x" * 100
    assert not WAF.inspect("POST", "/", [("content-type", "application/json")], benign,
                           body_whole=False)[0]  # fmt: skip


def test_a_lone_surrogate_in_a_long_json_string_is_no_failure() -> None:
    body = b'{"q": "' + b"a" * 40 + b'\\ud800 union select password from users"}'
    blocked, lines = WAF.inspect("POST", "/", [("content-type", "application/json")], body)
    assert blocked and lines


def test_two_waf_instances_each_judge_a_request_with_a_body() -> None:
    from trilb.plugin import Context, Reply

    lenient = Waf(WafSettings(mode="detect"))
    ctx = Context("127.0.0.1", "http", "web")
    head = ("POST", "/api", [("content-type", "application/json")])
    ctx.vars[lenient.key] = head  # (what on_request left, for each instance)
    ctx.vars[WAF.key] = head
    attack = b'{"q": "1\' UNION SELECT password FROM users--"}'
    assert lenient.on_request_body(ctx, attack, True) is not None  # detect: continues
    assert isinstance(WAF.on_request_body(ctx, attack, True), Reply)  # still judged
