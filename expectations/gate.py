"""The one helper DAG tasks use to run a suite: validate a DataFrame, explain failures, or pass.

A failure names the table, the column and the rule, with a count and examples of offending values.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pyarrow as pa


class DataQualityError(ValueError):
    """Raised when a table breaks its contract; the message lists every broken rule."""

    def __init__(self, table: str, failures: list[str]):
        self.table = table
        self.failures = failures
        super().__init__(f"{table}: {len(failures)} data-quality rule(s) failed:\n  - " + "\n  - ".join(failures))


@dataclass
class ValidationReport:
    table: str
    rows: int
    checked: int
    failures: list[str] = field(default_factory=list)
    rows_in: int | None = None                                  # raw tables: rows delivered (= rows + quarantined)
    quarantined: int = 0
    by_rule: dict[str, int] = field(default_factory=dict)      # quarantined rows per row rule
    examples: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    older_partitions: dict[str, dict] = field(default_factory=dict)   # earlier raw partitions validated this run
    results: list[dict] = field(default_factory=list)          # every expectation: {"rule", "success", "detail"}

    @property
    def success(self) -> bool:
        return not self.failures

    def raise_for_failures(self) -> "ValidationReport":
        if self.failures:
            raise DataQualityError(self.table, self.failures)
        return self


def check_schema(table: str, actual: pa.Schema, expected: pa.Schema) -> list[str]:
    """Contract columns must exist with their exact types; extra columns are allowed."""
    problems = []
    for f in expected:
        idx = actual.get_field_index(f.name)
        if idx < 0:
            problems.append(f"{table}.{f.name}: rule=column_exists: column is missing (expected {f.type})")
        elif not actual.field(idx).type.equals(f.type):
            problems.append(f"{table}.{f.name}: rule=column_type: expected {f.type}, found {actual.field(idx).type}")
    return problems


def _quiet_gx() -> None:
    """GX's import logs "Skipping registering function ..." (hundreds of lines), and its data_context.types.base
    module sets its own logger to INFO at import, then logs "Created temporary directory ... for ephemeral docs site"
    on every validation (a third of a night's log lines): the levels are set before and again after the import."""
    names = ("great_expectations", "great_expectations._docs_decorators", "great_expectations.data_context.types.base")
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)
    import great_expectations.data_context.types.base  # noqa: F401

    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)


def rule_label(cfg) -> str:
    """`column: rule[ where condition]` of an expectation configuration: a quarantined row's reason."""
    kw = cfg.kwargs
    column = _columns(kw)
    cond = kw.get("row_condition")
    if isinstance(cond, dict):      # GX 1.24 keeps a pandas condition as {"pass_through_filter": ..., ...}
        cond = cond.get("pass_through_filter", cond)
    where = f" where {cond}" if cond else ""
    return f"{column}: {cfg.type}{where}"


def _columns(kw: dict) -> str:
    if kw.get("column"):
        return kw["column"]
    if kw.get("column_list"):
        return "+".join(kw["column_list"])
    return f"{kw.get('column_A')}/{kw.get('column_B')}"


def referenced_columns(expectations: list, names: list[str]) -> list[str]:
    """The columns of `names` the expectations read: their column, column_list, column_A / column_B, and any name a
    row condition mentions (a whole word of it). What a table's validation needs to load, in `names`' order."""
    import re

    used: set[str] = set()
    for e in expectations:
        kw = e.configuration.kwargs
        used.update(c for c in (kw.get("column"), kw.get("column_A"), kw.get("column_B")) if c)
        used.update(kw.get("column_list") or [])
        cond = kw.get("row_condition")
        if isinstance(cond, dict):
            cond = cond.get("pass_through_filter", "")
        if cond:
            used.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", str(cond)))
    return [n for n in names if n in used]


def show(value) -> str:
    """A value as an error message shows it: null for a missing one (pandas hands GX NaN/NaT/None)."""
    try:
        import pandas as pd

        if value is None or (not isinstance(value, (list, tuple, dict)) and pd.isna(value)):
            return "null"
    except (TypeError, ValueError):
        pass
    return str(value)


def _describe(result) -> str:
    cfg = result.expectation_config
    kw = cfg.kwargs
    column = _columns(kw)
    rule = cfg.type
    where = f" where {kw['row_condition']}" if kw.get("row_condition") else ""
    limits = {k: kw[k] for k in ("value_set", "min_value", "max_value") if kw.get(k) is not None}
    if "value_set" in limits and len(limits["value_set"]) > 12:
        limits["value_set"] = f"<{len(limits['value_set'])} allowed values>"
    r = result.result or {}
    exc = (result.exception_info or {}).get("exception_message") if isinstance(result.exception_info, dict) else None
    if exc:
        detail = f"could not be evaluated: {exc}"
    elif r.get("unexpected_count") is not None:
        examples = [show(v) for v in (r.get("partial_unexpected_list") or [])[:5]]
        detail = f"{r['unexpected_count']} of {r.get('element_count')} rows break it" + (
            f" (e.g. {', '.join(examples)})" if examples else "")
    else:
        detail = f"observed {r.get('observed_value')!r}"
    return f"{column}: rule={rule}{where} {limits if limits else ''}: {detail}".replace("  ", " ")


def validate(frame, table: str, expectations: list, failing_rows: dict | None = None) -> ValidationReport:
    """Run `expectations` on a pandas or Spark DataFrame and report every broken rule.

    Pandas is the default engine for a day's partition: GX on Spark costs ~12 s per 1M rows here
    against ~0.3 s on pandas (STACK-NOTES); pass a Spark DataFrame for tables that do not fit memory.

    failing_rows (pandas only): filled with {rule label: index labels of the rows that break it} for every failed
    row-wise expectation (GX's COMPLETE result format), so the rows can be quarantined with their reason.

    GX's context and batch hold the frame in reference cycles: without a collection here each validated frame
    stays in memory until the cycle collector's next full pass (a month of 6M-row events partitions, validated
    one after another, grew one process by ~1 GB per partition, to 19.6 GB at 1M users)."""
    import gc

    try:
        return _validate(frame, table, expectations, failing_rows)
    finally:
        gc.collect()


def _validate(frame, table: str, expectations: list, failing_rows: dict | None) -> ValidationReport:
    _quiet_gx()
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    is_spark = type(frame).__module__.startswith("pyspark")
    source = ctx.data_sources.add_spark("hermes") if is_spark else ctx.data_sources.add_pandas("hermes")
    batch_def = source.add_dataframe_asset(name=table.replace("/", "_")).add_batch_definition_whole_dataframe("all")
    suite = ctx.suites.add(gx.ExpectationSuite(name=f"hermes.{table.replace('/', '.')}"))
    for e in expectations:   # a copy: an expectation belongs to one suite, and a list may be validated again
        suite.add_expectation(e.copy(update={"id": None}))
    batch = batch_def.get_batch(batch_parameters={"dataframe": frame})
    if failing_rows is None:
        result = batch.validate(suite)
    else:
        result = batch.validate(suite, result_format={"result_format": "COMPLETE"})
        for r in result.results:
            if not r.success:
                failing_rows[rule_label(r.expectation_config)] = list((r.result or {}).get("unexpected_index_list")
                                                                      or [])
    failures = [f"{table}.{_describe(r)}" for r in result.results if not r.success]
    results = [{"rule": rule_label(r.expectation_config), "success": bool(r.success), "detail": _describe(r)}
               for r in result.results]
    rows = frame.count() if is_spark else len(frame)
    return ValidationReport(table=table, rows=int(rows), checked=len(expectations), failures=failures,
                            results=results)


# Expectations whose verdict on a table is the AND of their verdicts on any split of its rows (with mostly=1).
_ROW_WISE = ("ExpectColumnValuesToNotBeNull", "ExpectColumnValuesToBeInSet", "ExpectColumnValuesToBeBetween",
             "ExpectColumnPairValuesAToBeGreaterThanB", "ExpectColumnDistinctValuesToBeInSet",
             "ExpectColumnValuesToMatchRegex", "ExpectColumnValuesToNotBeInSet", "ExpectColumnValuesToBeNull")


def splits_by_key(expectation, key: str) -> bool:
    """True when `expectation` gives the same verdict on the whole table as on all parts of a split in which every
    value of `key` lands in one part: row-wise rules, and uniqueness of `key` or of a compound including it."""
    if getattr(expectation, "mostly", 1) not in (None, 1, 1.0):
        return False
    name = type(expectation).__name__
    if name in _ROW_WISE:
        return True
    if name == "ExpectColumnValuesToBeUnique":
        return expectation.column == key
    if name == "ExpectCompoundColumnsToBeUnique":
        return key in expectation.column_list
    return False


def validate_dataset(dataset, table: str, expectations: list, columns: list[str], key: str = "user_id",
                     chunk_rows: int = 8_000_000) -> ValidationReport:
    """Run `expectations` on a pyarrow dataset through pandas, in parts of about `chunk_rows` rows when it is larger
    and every expectation splits by `key` (an integer column): each part holds whole ranges of `key` (edges from
    quantiles), so uniqueness over keys including it stays exact, and the parts' rows must add up to the table's.
    The table is read once, strings as dictionaries (a 100M-row column of scene ids is then 4 bytes a row, not
    a Python object), and parts are cut from it in memory."""
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    strings = [f.name for f in dataset.schema if f.name in columns and pa.types.is_string(f.type)]
    if strings and isinstance(dataset, pads.FileSystemDataset):
        fmt = pads.ParquetFileFormat(read_options=pads.ParquetReadOptions(dictionary_columns=strings))
        dataset = pads.dataset(dataset.files, format=fmt, filesystem=dataset.filesystem)
    data = dataset.to_table(columns=columns)
    rows = data.num_rows
    parts = -(-rows // chunk_rows)
    if (parts <= 1 or key not in data.column_names or not pa.types.is_integer(data.schema.field(key).type)
            or not all(splits_by_key(e, key) for e in expectations)):
        return validate(data.to_pandas(), table, expectations)
    col = data[key]
    values = pc.fill_null(col, 0).to_numpy()
    present = values[~pc.is_null(col).to_numpy(zero_copy_only=False)]
    sample = present[:: max(1, len(present) // 200_000)]
    edges = np.unique(np.quantile(sample, np.linspace(0, 1, parts + 1)[1:-1]).astype(np.int64))
    part_of = np.searchsorted(edges, values, side="right").astype(np.int32)
    part_of[pc.is_null(col).to_numpy(zero_copy_only=False)] = len(edges) + 1      # rows without a key: own part
    del values, present
    bounds = [None, *edges.tolist(), None]
    failures, seen, results = [], 0, {}
    for i in range(len(edges) + 2):
        part = data.filter(pa.array(part_of == i))
        if part.num_rows == 0:
            continue
        seen += part.num_rows
        where = (f"{key} is null" if i == len(edges) + 1 else
                 f"{key} in [{bounds[i] if bounds[i] is not None else '-inf'}, "
                 f"{bounds[i + 1] if bounds[i + 1] is not None else 'inf'})")
        report = validate(part.to_pandas(), table, expectations)
        failures += [f"{f} [part {where}]" for f in report.failures]
        for r in report.results:                # an expectation holds on the table when it holds on every part
            seen_r = results.setdefault(r["rule"], {"rule": r["rule"], "success": True, "detail": r["detail"]})
            if not r["success"]:
                seen_r["success"], seen_r["detail"] = False, f"{r['detail']} [part {where}]"
        del part, report
    if seen != rows:
        failures.append(f"{table}.{key}: rule=parts_cover_table: validated {seen} rows in parts, table has {rows}")
    logging.getLogger(__name__).info("%s: %d rows validated in %d parts by %s", table, rows, len(edges) + 1, key)
    return ValidationReport(table=table, rows=rows, checked=len(expectations), failures=failures,
                            results=list(results.values()))
