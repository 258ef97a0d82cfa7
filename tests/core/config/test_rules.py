"""The audience rule language accepts what operators write and rejects anything hostile, saying why."""
from __future__ import annotations

import pytest

from core.config.rules import Between, BoolOp, Compare, Feature, InList, IsNull, Literal, Not, RuleError, features_used, parse_rule


@pytest.mark.parametrize("rule,expected", [
    ("n_view_7d >= 3", Compare(">=", Feature("n_view_7d"), Literal(3))),
    ("platform in ('ios', 'android_huawei')", InList(Feature("platform"), ("ios", "android_huawei"))),
    ("platform not in ('ios')", InList(Feature("platform"), ("ios",), negated=True)),
    ("days_since_last_open between 7 and 28", Between(Feature("days_since_last_open"), Literal(7), Literal(28))),
    ("days_since_last_open is null", IsNull(Feature("days_since_last_open"))),
    ("not opt_in", Not(Feature("opt_in"))),
    ("opt_in = true", Compare("=", Feature("opt_in"), Literal(True))),
])
def test_accepts_the_language(rule, expected):
    assert parse_rule(rule) == expected


def test_precedence_not_binds_tighter_than_and_tighter_than_or():
    node = parse_rule("n_view_7d > 1 or not opt_in and tenure_days < 30")
    assert isinstance(node, BoolOp) and node.op == "or"
    assert isinstance(node.items[1], BoolOp) and node.items[1].op == "and"
    assert isinstance(node.items[1].items[0], Not)


def test_between_inside_a_conjunction_takes_its_own_and():
    node = parse_rule("days_since_last_open between 7 and 28 and opt_in")
    assert node == BoolOp("and", (Between(Feature("days_since_last_open"), Literal(7), Literal(28)),
                                  Feature("opt_in")))
    assert features_used(node) == {"days_since_last_open", "opt_in"}


@pytest.mark.parametrize("rule,message", [
    ("salary > 100", "unknown feature 'salary'"),
    ("__import__('os')", "function calls are not allowed"),
    ("__import__('os').system('rm -rf /')", "unexpected character '.'"),
    ("lower(platform) = 'ios'", "function calls are not allowed"),
    ("n_view_7d > 1; DROP TABLE users", "statement separators"),
    ("n_view_7d > 1 -- and opt_in", "SQL comments"),
    ("n_view_7d > 1 /* */", "SQL comments"),
    ("user_id in (select user_id from users)", "unknown feature 'user_id'"),
    ("n_view_7d in (select 1)", "SQL is not allowed"),
    ("opt_in or 1=1 union select user_id from users", "SQL is not allowed in audience rules ('union')"),
    ("opt_in or 1=1 union select * from users", "unexpected character '*'"),
    ("`n_view_7d` > 1", "quoted identifiers"),
    ("n_view_7d > 1 and", "the rule ends too early"),
    ("n_view_7d >", "the rule ends too early"),
    ("(n_view_7d > 1", "expected ')'"),
    ("n_view_7d", "must be a condition"),
    ("platform > 3", "compares a string with a number"),
    ("platform between 'a' and 'z'", "'between' needs numbers"),
    ("tenure_days and opt_in", "'and' needs conditions"),
    ("n_view_7d > 1 opt_in", "unexpected 'opt_in'"),
    ("", "the rule is empty"),
    ("n_view_7d > 1 & opt_in", "unexpected character '&'"),
    ("platform = 'ios' || 'x'", "unexpected character '|'"),
    ("self.__class__", "unexpected character '.'"),
    ("(" * 40 + "opt_in" + ")" * 40, "nests deeper"),
    ("opt_in and " * 200 + "opt_in", "the limit is"),
    ("n_view_7d > 99999999999999999999", "out of range"),
])
def test_rejects_hostile_and_broken_rules_with_a_reason(rule, message):
    with pytest.raises(RuleError) as err:
        parse_rule(rule)
    assert message in str(err.value)


def test_error_points_at_the_offending_position():
    with pytest.raises(RuleError) as err:
        parse_rule("n_view_7d > 1 and salary > 3")
    assert err.value.position == len("n_view_7d > 1 and ")
    assert "at character 19" in str(err.value)


def test_non_text_is_rejected():
    with pytest.raises(RuleError, match="must be text"):
        parse_rule(42)  # type: ignore[arg-type]
