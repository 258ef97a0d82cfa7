"""Row-level defects of a raw table: which rows break which rule, so they are quarantined with a reason while
the clean rows go on. Pure: a pyarrow table and the suite in, a verdict per row out; no I/O.

Row-level rules are every expectation of the table's raw suite (each is row-wise: enum values, nulls in keys,
out-of-range values, timestamps outside the partition's day or after the newest data, duplicate keys) plus two
that Great Expectations does not express on one table: exact duplicate rows (every copy after the first), ids
absent from their dimension, and keys that another partition of the table already holds (push_log's push_id:
a receipt written twice would be counted twice by training). A row's reason is the first rule it breaks, in
that order: duplicates first, then the suite's order, then the dimensions, then the other partitions.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

DUPLICATE_ROW = "(row): duplicate_row"
EXAMPLES = 5


def unknown_id_rule(column: str, dimension: str) -> str:
    return f"{column}: id_in_dimension raw/{dimension}"


def taken_key_rule(column: str) -> str:
    return f"{column}: unique_across_partitions"


@dataclass
class RowVerdict:
    rows: int
    reason: np.ndarray                                        # object [rows]: the first rule broken, None if clean
    by_rule: dict[str, int] = field(default_factory=dict)     # rows breaking each rule (a row may break several)
    examples: dict[str, list[str]] = field(default_factory=dict)
    checked: int = 0                                          # rules evaluated
    rules: list[str] = field(default_factory=list)            # every rule evaluated (the validation docs list them)

    @property
    def bad(self) -> np.ndarray:
        return np.array([r is not None for r in self.reason], dtype=bool)

    @property
    def n_bad(self) -> int:
        return int(self.bad.sum())


def _row_hashes(table: pa.Table, columns: list[str]) -> np.ndarray | None:
    """A 64-bit hash per row over `columns` (None when a column is nested): equal rows hash equal."""
    import pyarrow.compute as pc

    h = np.full(table.num_rows, 0x9E3779B97F4A7C15, dtype=np.uint64)
    for c in columns:
        col = table[c].combine_chunks()
        if pa.types.is_nested(col.type):
            return None
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or pa.types.is_boolean(col.type):
            col = pc.dictionary_encode(col).indices
        elif pa.types.is_floating(col.type):
            bits = pc.fill_null(col, 0).to_numpy(zero_copy_only=False).view(np.int64)
            col = pa.array(bits, mask=pc.is_null(col).to_numpy(zero_copy_only=False))
        v = pc.fill_null(col.cast(pa.int64()), -1).to_numpy(zero_copy_only=False).astype(np.uint64)
        v ^= pc.is_null(col).to_numpy(zero_copy_only=False).astype(np.uint64) << np.uint64(63)
        with np.errstate(over="ignore"):
            h = (h ^ v) * np.uint64(0xBF58476D1CE4E5B9)
            h ^= h >> np.uint64(31)
    return h


def duplicate_rows(table: pa.Table, columns: list[str]) -> np.ndarray:
    """bool [rows]: True for every copy of a row after its first (all `columns` equal, nulls equal). Rows are
    hashed in Arrow first; only rows whose hash repeats are compared exactly (pandas), so a clean 7M-row day
    costs a sort, not a 7M-row pandas comparison."""
    import pandas as pd

    n = table.num_rows
    out = np.zeros(n, dtype=bool)
    if n == 0:
        return out
    h = _row_hashes(table, columns)
    if h is None:
        rows = np.arange(n)
    else:
        order = np.argsort(h, kind="stable")
        same = h[order][1:] == h[order][:-1]
        rows = np.unique(np.concatenate([order[1:][same], order[:-1][same]]))
        if rows.size == 0:
            return out
    frame = table.take(pa.array(rows)).select(columns).to_pandas()
    for c in columns:    # lists are unhashable: compare them as tuples
        if pa.types.is_list(table.schema.field(c).type):
            frame[c] = [None if v is None else tuple(v) for v in frame[c]]
    out[rows] = pd.DataFrame(frame).duplicated(keep="first").to_numpy()    # rows are in table order
    return out


def unknown_ids(table: pa.Table, column: str, known: pa.Array) -> np.ndarray:
    """bool [rows]: a non-null id that `known` (the dimension's ids) does not hold."""
    import pyarrow.compute as pc

    col = table[column]
    missing = pc.invert(pc.is_in(col, value_set=known.cast(col.type)))
    return pc.fill_null(pc.and_(pc.is_valid(col), missing), False).to_numpy(zero_copy_only=False)


def _examples(table: pa.Table, rule: str, rows: np.ndarray) -> list[str]:
    from expectations.gate import show

    head = rows[:EXAMPLES]
    column = rule.split(":")[0]
    if "/" in column and all(c in table.column_names for c in column.split("/")):
        cols = column.split("/")
        return ["(" + ", ".join(show(table[c][int(i)].as_py()) for c in cols) + ")" for i in head]
    if column in table.column_names:
        return [show(table[column][int(i)].as_py()) for i in head]
    return [f"row {int(i)}" for i in head]


def row_verdict(table: pa.Table, name: str, expectations: list, contract_columns: list[str],
                dimensions: dict[str, tuple[str, pa.Array]] | None = None,
                taken: dict[str, pa.Array] | None = None) -> RowVerdict:
    """Evaluate every row rule on `table` (named e.g. raw/events). dimensions: {column: (dimension table, its ids)}
    for the ids that must exist there; taken: {column: keys the table's other partitions hold} for keys unique
    across partitions."""
    from expectations.gate import validate

    n = table.num_rows
    reason = np.full(n, None, dtype=object)
    by_rule: dict[str, int] = {}
    examples: dict[str, list[str]] = {}

    def mark(rule: str, rows: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return
        by_rule[rule] = by_rule.get(rule, 0) + int(rows.size)
        examples.setdefault(rule, _examples(table, rule, rows))
        first = rows[reason[rows] == None]  # noqa: E711 (elementwise on an object array)
        reason[first] = rule

    dup = duplicate_rows(table, contract_columns)
    mark(DUPLICATE_ROW, np.flatnonzero(dup))
    failing: dict[str, list] = {}
    if n:
        frame = table.to_pandas()
        # the suite sees one copy of each duplicated row: a repeated key is then a conflict, not a re-delivery
        validate(frame[~dup], name, expectations, failing_rows=failing)
    for rule, labels in failing.items():
        mark(rule, np.asarray(labels, dtype=np.int64))
    for column, (dimension, known) in (dimensions or {}).items():
        mark(unknown_id_rule(column, dimension), np.flatnonzero(unknown_ids(table, column, known)))
    for column, keys in (taken or {}).items():
        import pyarrow.compute as pc

        hit = pc.fill_null(pc.is_in(table[column], value_set=keys), False).to_numpy(zero_copy_only=False)
        mark(taken_key_rule(column), np.flatnonzero(hit))
    from expectations.gate import rule_label

    rules = ([DUPLICATE_ROW] + [rule_label(e.configuration) for e in expectations]
             + [unknown_id_rule(c, d) for c, (d, _) in (dimensions or {}).items()]
             + [taken_key_rule(c) for c in (taken or {})])
    return RowVerdict(rows=n, reason=reason, by_rule=by_rule, examples=examples, checked=len(rules), rules=rules)
