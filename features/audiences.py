"""Scene audiences: user x scene eligibility from the configured rules.

A rule arrives as the AST of core.config.rules (already whitelisted and type-checked) and is compiled into
a Spark Column here: no string ever reaches Spark SQL.
"""
from __future__ import annotations

from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from core.config.rules import Between, BoolOp, Compare, Feature, InList, IsNull, Literal, Node, Not, parse_rule

_COMPARE = {"=": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
            "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


def to_column(node: Node) -> Column:
    """Compile a rule AST into a Spark Column. SQL three-valued logic: a comparison with a null
    feature is unknown, and unknown users are not in the audience."""
    if isinstance(node, Feature):
        return F.col(node.name)
    if isinstance(node, Literal):
        return F.lit(node.value)
    if isinstance(node, Compare):
        return _COMPARE[node.op](to_column(node.left), to_column(node.right))
    if isinstance(node, InList):
        c = to_column(node.operand).isin(*node.values)
        return ~c if node.negated else c
    if isinstance(node, Between):
        c = to_column(node.operand).between(to_column(node.low), to_column(node.high))
        return ~c if node.negated else c
    if isinstance(node, IsNull):
        c = to_column(node.operand).isNull()
        return ~c if node.negated else c
    if isinstance(node, BoolOp):
        parts = [to_column(i) for i in node.items]
        return reduce(lambda a, b: (a & b) if node.op == "and" else (a | b), parts)
    if isinstance(node, Not):
        return ~to_column(node.item)
    raise TypeError(f"not a rule node: {node!r}")


def audiences(user_features: DataFrame, rules: dict[str, str]) -> DataFrame:
    """(user_id, scene_id) for every user matching each scene's audience rule."""
    if not rules:
        raise ValueError("no scenes to build audiences for")
    parts = [user_features.where(F.coalesce(to_column(parse_rule(rule)), F.lit(False)))
             .select("user_id", F.lit(scene_id).alias("scene_id"))
             for scene_id, rule in sorted(rules.items())]
    return reduce(DataFrame.unionByName, parts)
