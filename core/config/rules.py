"""The audience rule language: a tiny, safe expression language over whitelisted user features.

Grammar (case-insensitive keywords):
    expr     := or
    or       := and ("or" and)*
    and      := not ("and" not)*
    not      := "not" not | compare
    compare  := operand [ ("=" | "==" | "!=" | "<>" | "<" | "<=" | ">" | ">=") operand
                        | ["not"] "in" "(" literal ("," literal)* ")"
                        | ["not"] "between" operand "and" operand
                        | "is" ["not"] "null" ]
    operand  := feature | number | 'string' | "string" | true | false | "(" expr ")"

It is parsed into a small AST (never `eval`, never passed through as SQL). A name that is not a whitelisted
feature, a function call, or any SQL-ish token (`;`, comments, `select`, ...) is rejected with the position.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

# Whitelisted user features and their types: the columns of features/user_features a rule may read.
NUMBER, STRING, BOOL = "number", "string", "bool"


def _feature_types() -> dict[str, str]:
    from core.contract import EVENT_TYPES

    types = {"opt_in": BOOL, "has_device_token": BOOL, "platform": STRING, "tz": STRING,
             "tenure_days": NUMBER, "days_since_last_open": NUMBER, "peak_local_hour": NUMBER,
             "n_listings_on_sale": NUMBER, "n_chats_waiting": NUMBER}
    for et in EVENT_TYPES:
        for w in (1, 7, 28):
            types[f"n_{et}_{w}d"] = NUMBER
    for k in ("sent", "opened"):
        for w in (7, 28):
            types[f"pushes_{k}_{w}d"] = NUMBER
    return types


FEATURES: dict[str, str] = _feature_types()
MAX_LENGTH = 1000
MAX_DEPTH = 30
SQL_WORDS = {"select", "from", "where", "union", "drop", "delete", "insert", "update", "join", "exec",
             "create", "alter", "table", "having", "group", "order", "limit", "into", "grant", "truncate"}
KEYWORDS = {"and", "or", "not", "in", "between", "is", "null", "true", "false"}


class RuleError(ValueError):
    """An audience rule that cannot be accepted; `position` is the 0-based character offset."""

    def __init__(self, message: str, position: int | None = None, rule: str = ""):
        self.position = position
        self.reason = message
        where = f" at character {position + 1}" if position is not None else ""
        shown = f": {rule!r}" if rule else ""
        super().__init__(f"{message}{where}{shown}")


# ---- AST ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Feature:
    name: str


@dataclass(frozen=True)
class Literal:
    value: Union[int, float, str, bool]


@dataclass(frozen=True)
class Compare:
    op: str                 # = != < <= > >=
    left: "Node"
    right: "Node"


@dataclass(frozen=True)
class InList:
    operand: "Node"
    values: tuple
    negated: bool = False


@dataclass(frozen=True)
class Between:
    operand: "Node"
    low: "Node"
    high: "Node"
    negated: bool = False


@dataclass(frozen=True)
class IsNull:
    operand: "Node"
    negated: bool = False


@dataclass(frozen=True)
class BoolOp:
    op: str                 # and / or
    items: tuple


@dataclass(frozen=True)
class Not:
    item: "Node"


Node = Union[Feature, Literal, Compare, InList, Between, IsNull, BoolOp, Not]


# ---- tokens -------------------------------------------------------------------------------------
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<op><=|>=|==|!=|<>|=|<|>)
  | (?P<punct>[(),])
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
""", re.VERBOSE)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    pos: int


def tokenize(rule: str) -> list[Token]:
    if len(rule) > MAX_LENGTH:
        raise RuleError(f"rule is {len(rule)} characters long; the limit is {MAX_LENGTH}", None, rule[:60] + "...")
    for bad, why in ((";", "statement separators"), ("--", "SQL comments"), ("/*", "SQL comments"),
                     ("`", "quoted identifiers")):
        at = rule.find(bad)
        if at >= 0:
            raise RuleError(f"{why} ({bad!r}) are not allowed in audience rules", at, rule)
    tokens, pos = [], 0
    while pos < len(rule):
        m = _TOKEN.match(rule, pos)
        if not m:
            raise RuleError(f"unexpected character {rule[pos]!r}", pos, rule)
        if m.lastgroup != "ws":
            tokens.append(Token(m.lastgroup, m.group(), pos))
        pos = m.end()
    return tokens


# ---- parser -------------------------------------------------------------------------------------
class _Parser:
    def __init__(self, rule: str, features: dict[str, str]):
        self.rule = rule
        self.features = features
        self.tokens = tokenize(rule)
        self.i = 0
        self.depth = 0

    def error(self, message: str, tok: Token | None = None) -> RuleError:
        pos = tok.pos if tok else (self.tokens[self.i].pos if self.i < len(self.tokens) else len(self.rule))
        return RuleError(message, pos, self.rule)

    def peek(self) -> Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def word(self, *words: str) -> bool:
        t = self.peek()
        return bool(t and t.kind == "name" and t.text.lower() in words)

    def take(self) -> Token:
        t = self.peek()
        if t is None:
            raise self.error("the rule ends too early")
        self.i += 1
        return t

    def expect_word(self, word: str) -> None:
        if not self.word(word):
            raise self.error(f"expected {word!r}")
        self.i += 1

    def expect_punct(self, p: str) -> None:
        t = self.peek()
        if not (t and t.kind == "punct" and t.text == p):
            raise self.error(f"expected {p!r}")
        self.i += 1

    def parse(self) -> Node:
        if not self.tokens:
            raise RuleError("the rule is empty", 0, self.rule)
        node = self.parse_or()
        left = self.peek()
        if left is not None:
            if left.kind == "name" and left.text.lower() in SQL_WORDS:
                raise self.error(f"SQL is not allowed in audience rules ({left.text!r})", left)
            raise self.error(f"unexpected {left.text!r}")
        return node

    def parse_or(self) -> Node:
        items = [self.parse_and()]
        while self.word("or"):
            self.i += 1
            items.append(self.parse_and())
        return items[0] if len(items) == 1 else BoolOp("or", tuple(items))

    def parse_and(self) -> Node:
        items = [self.parse_not()]
        while self.word("and"):
            self.i += 1
            items.append(self.parse_not())
        return items[0] if len(items) == 1 else BoolOp("and", tuple(items))

    def parse_not(self) -> Node:
        if self.word("not"):
            self.i += 1
            return Not(self.parse_not())
        return self.parse_compare()

    def parse_compare(self) -> Node:
        left = self.parse_operand()
        t = self.peek()
        if t is None:
            return left
        if t.kind == "op":
            self.i += 1
            op = {"==": "=", "<>": "!="}.get(t.text, t.text)
            return Compare(op, left, self.parse_operand())
        negated = False
        if self.word("not"):
            nxt = self.tokens[self.i + 1] if self.i + 1 < len(self.tokens) else None
            if nxt and nxt.kind == "name" and nxt.text.lower() in ("in", "between"):
                self.i += 1
                negated = True
        if self.word("in"):
            self.i += 1
            self.expect_punct("(")
            values = [self.parse_literal()]
            while self.peek() and self.peek().text == ",":
                self.i += 1
                values.append(self.parse_literal())
            self.expect_punct(")")
            return InList(left, tuple(v.value for v in values), negated)
        if self.word("between"):
            self.i += 1
            low = self.parse_operand()
            self.expect_word("and")
            return Between(left, low, self.parse_operand(), negated)
        if self.word("is"):
            self.i += 1
            neg = False
            if self.word("not"):
                self.i += 1
                neg = True
            self.expect_word("null")
            return IsNull(left, neg)
        return left

    def parse_literal(self) -> Literal:
        node = self.parse_operand()
        if not isinstance(node, Literal):
            raise self.error("a list may only hold constants")
        return node

    def parse_operand(self) -> Node:
        t = self.take()
        if t.kind == "number":
            value = float(t.text) if "." in t.text else int(t.text)
            if not -2 ** 63 <= value < 2 ** 63:     # what Spark and pandas can compare a feature with
                raise self.error(f"the number {t.text} is out of range (a rule's numbers fit in 64 bits)", t)
            return Literal(value)
        if t.kind == "string":
            return Literal(re.sub(r"\\(.)", r"\1", t.text[1:-1]))
        if t.kind == "punct" and t.text == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise self.error(f"the rule nests deeper than {MAX_DEPTH} parentheses", t)
            node = self.parse_or()
            self.expect_punct(")")
            self.depth -= 1
            return node
        if t.kind == "name":
            low = t.text.lower()
            nxt = self.peek()
            if nxt and nxt.kind == "punct" and nxt.text == "(":
                raise self.error(f"function calls are not allowed ({t.text}(...))", t)
            if low in ("true", "false"):
                return Literal(low == "true")
            if low in SQL_WORDS:
                raise self.error(f"SQL is not allowed in audience rules ({t.text!r})", t)
            if low in KEYWORDS:
                raise self.error(f"unexpected keyword {t.text!r}", t)
            if t.text not in self.features:
                raise self.error(f"unknown feature {t.text!r}; allowed: {', '.join(sorted(self.features))}", t)
            return Feature(t.text)
        raise self.error(f"unexpected {t.text!r}", t)


def _type_of(node: Node, features: dict[str, str]) -> str:
    if isinstance(node, Feature):
        return features[node.name]
    if isinstance(node, Literal):
        v = node.value
        return BOOL if isinstance(v, bool) else STRING if isinstance(v, str) else NUMBER
    return BOOL


def _check_types(node: Node, rule: str, features: dict[str, str]) -> None:
    """Comparisons must compare like with like; and/or/not must combine conditions."""
    def same(a: Node, b: Node, what: str):
        ta, tb = _type_of(a, features), _type_of(b, features)
        if ta != tb:
            raise RuleError(f"{what} compares a {ta} with a {tb}", None, rule)

    if isinstance(node, Compare):
        same(node.left, node.right, f"'{node.op}'")
        if _type_of(node.left, features) != NUMBER and node.op not in ("=", "!="):
            raise RuleError(f"'{node.op}' needs numbers", None, rule)
    elif isinstance(node, InList):
        for v in node.values:
            same(node.operand, Literal(v), "'in'")
    elif isinstance(node, Between):
        for bound in (node.low, node.high):
            same(node.operand, bound, "'between'")
        if _type_of(node.operand, features) != NUMBER:
            raise RuleError("'between' needs numbers", None, rule)
    elif isinstance(node, BoolOp):
        for item in node.items:
            if isinstance(item, (Feature, Literal)) and _type_of(item, features) != BOOL:
                raise RuleError(f"'{node.op}' needs conditions, got a {_type_of(item, features)}", None, rule)
            _check_types(item, rule, features)
    elif isinstance(node, Not):
        if isinstance(node.item, (Feature, Literal)) and _type_of(node.item, features) != BOOL:
            raise RuleError("'not' needs a condition", None, rule)
        _check_types(node.item, rule, features)


def parse_rule(rule: str, features: dict[str, str] | None = None) -> Node:
    """Parse and type-check an audience rule; raise RuleError saying what is wrong and where."""
    if not isinstance(rule, str):
        raise RuleError(f"a rule must be text, got {type(rule).__name__}")
    features = FEATURES if features is None else features
    node = _Parser(rule, features).parse()
    if isinstance(node, (Feature, Literal)) and _type_of(node, features) != BOOL:
        raise RuleError("a rule must be a condition (true or false), not a value", 0, rule)
    _check_types(node, rule, features)
    return node


def features_used(node: Node) -> set[str]:
    if isinstance(node, Feature):
        return {node.name}
    if isinstance(node, Literal):
        return set()
    children = {
        Compare: lambda n: (n.left, n.right), InList: lambda n: (n.operand,),
        Between: lambda n: (n.operand, n.low, n.high), IsNull: lambda n: (n.operand,),
        BoolOp: lambda n: n.items, Not: lambda n: (n.item,),
    }[type(node)](node)
    return set().union(*(features_used(c) for c in children))
