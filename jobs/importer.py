"""`hermes import`: bring a marketplace's own tables into the raw contract.

    hermes import DIR                      # DIR/<table>.csv|.parquet or DIR/<table>/*.csv|*.parquet, any tables
    hermes import --table events a.csv b.parquet

Per table: every file is read (CSV — comma, semicolon, tab or pipe separated, found from the header — or Parquet;
columns by name, extra columns ignored and reported), each value is parsed into the contract's type — a value that
cannot be (a price of "abc", a timestamp of "yesterday", an id of "12x") sends its row to the quarantine with the
reason `<column>: rule=parse_<type>`; where reading a column took a decision (epoch numbers' unit, the order of a
column of numeric dates) the report says which — ids exactly, never through a float — fact rows are split into
the hive partitions of their time column's UTC day, and dimensions replace the snapshot. Then raw validation runs
on everything imported (dimensions first: the facts' ids must exist in them): its row rules quarantine more rows
with their reasons, and a table-level failure (a missing column, a bad share above validation.max_bad_share)
stops the import with the table, column and rule.

Empty days are normal: a day inside the imported range with no item changes or no push history is written as an
explicit empty partition; an empty or absent push_log is a platform with no push history yet (the prior policy
plans until there is one). The report: per table, files read, rows in, rows written, quarantined by rule (parse and
validation), days written, and the counts add up.
"""
from __future__ import annotations

import csv
import json
import logging
import time
import uuid
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from core.contract import PARTITIONED, RAW_SCHEMAS, RAW_TABLES, TIME_COLUMN
from core.settings import Settings
from core.warehouse import Warehouse

log = logging.getLogger(__name__)
TEXT_SUFFIXES = (".csv", ".tsv")
SUFFIXES = (*TEXT_SUFFIXES, ".parquet", ".pq")
ORDER = ("users", "items", "item_changes", "events", "push_log")      # dimensions first


class ImportError_(ValueError):
    """A table-level problem: names the table, column and rule."""


def find_files(root: Path) -> dict[str, list[Path]]:
    """DIR/<table>.csv|parquet and DIR/<table>/**/*.csv|parquet for every contract table found."""
    out = {}
    for table in RAW_TABLES:
        files = [root / f"{table}{s}" for s in SUFFIXES if (root / f"{table}{s}").is_file()]
        if (root / table).is_dir():
            files += sorted(f for f in (root / table).rglob("*") if f.suffix in SUFFIXES and f.is_file()
                            and not f.name.startswith((".", "_")))
        if files:
            out[table] = files
    return out


DELIMITERS = (",", ";", "\t", "|")


def _delimiter(header: str, table: str) -> str:
    """The delimiter that splits the header line into the most of the table's contract columns (',' on a tie):
    exports come comma-, semicolon- (a spreadsheet in a decimal-comma locale), tab- or pipe-separated."""
    names = set(RAW_SCHEMAS[table].names)
    return max(DELIMITERS, key=lambda d: (sum(c.strip() in names for c in next(csv.reader([header], delimiter=d), [])),
                                          d == ","))


def _read_file(table: str, f: Path) -> pa.Table:
    """A file's rows with its column names stripped of blanks; CSV (any DELIMITERS, a UTF-8 byte order mark
    skipped) as text, every value parsed later."""
    import pyarrow.csv as pacsv

    sep = None
    try:
        if f.suffix in TEXT_SUFFIXES:
            # every column as text: each value is parsed below, and one bad value costs its row, not the file
            with open(f, newline="", encoding="utf-8-sig") as fh:
                line = fh.readline()
            sep = _delimiter(line, table)
            header = next(csv.reader([line], delimiter=sep), [])
            t = pacsv.read_csv(f, parse_options=pacsv.ParseOptions(delimiter=sep), convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in header}, strings_can_be_null=True,
                null_values=["", "null", "NULL", "None"]))
        else:
            t = pq.read_table(f)
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as e:
        raise ImportError_(f"raw/{table}.(table): rule=readable_file: {f} cannot be read as "
                           f"{'CSV' if f.suffix in TEXT_SUFFIXES else 'Parquet'} ({str(e)[:200]})") from None
    t = t.rename_columns([c.strip().lstrip("\ufeff") for c in t.column_names])
    return _decimal_commas(table, t) if sep == ";" else t


# A semicolon-separated export is a spreadsheet's in a locale whose decimal mark is the comma (that is why it is not
# comma-separated): its numbers read 12,50 and 1.234,50. Only there is "1,234" 1.234 and not 1234.
DECIMAL_COMMA = r"\s*[+-]?(?:\d{1,3}(?:\.\d{3})+|\d+),\d+\s*"
DECIMAL_COMMA_NOTE = b"hermes.decimal_comma"


def _decimal_commas(table: str, t: pa.Table) -> pa.Table:
    """The contract's decimal columns of a semicolon-separated file with their decimal commas as points (12,50 ->
    12.50, 1.234,50 -> 1234.50); the columns changed are named in the schema's metadata, for the report."""
    import pandas as pd

    changed = []
    for field in RAW_SCHEMAS[table]:
        if not pa.types.is_floating(field.type) or field.name not in t.column_names:
            continue
        s = pd.Series(t[field.name].to_pylist(), dtype=object)
        comma = s.str.fullmatch(DECIMAL_COMMA).eq(True)
        if not comma.any():
            continue
        s[comma] = s[comma].str.replace(".", "", regex=False).str.replace(",", ".", regex=False)
        t = t.set_column(t.column_names.index(field.name), field.name, pa.array(s.tolist(), pa.string()))
        changed.append(field.name)
    return t.replace_schema_metadata({DECIMAL_COMMA_NOTE: ",".join(changed).encode()}) if changed else t


_TRUE = {"true", "t", "1", "yes", "y"}
_FALSE = {"false", "f", "0", "no", "n"}


# Timestamps given as numbers (epoch time, as many exports write them): the unit is read off the column's magnitude,
# one unit per column. From 2001-09-09 to 2286-11-20 the units' ranges do not overlap: seconds < 1e11 <= milliseconds
# < 1e14 <= microseconds < 1e17 <= nanoseconds. A value whose magnitude is another unit's, or that lands outside
# EPOCH_YEARS, is unparsable (its row quarantined), never read as a date in 1970.
EPOCH_BOUNDS = (1e11, 1e14, 1e17)                     # seconds | milliseconds | microseconds | nanoseconds
EPOCH_UNITS = ("s", "ms", "us", "ns")
EPOCH_UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
EPOCH_TO_US = {"s": 1e6, "ms": 1e3, "us": 1.0, "ns": 1e-3}
EPOCH_YEARS = (1990, 2100)


def _epoch_numbers(col: pa.Array, s):
    """(UTC datetimes, unit) when the column holds numbers — a numeric type, or text most of whose values are numbers
    (the rest unparsable) — else None (dates as text: pandas parses them)."""
    import pandas as pd

    num = pd.to_numeric(s, errors="coerce").astype("float64")
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        present = s.notna()
        if not present.any() or num[present].isna().mean() >= 0.5:
            return None
    elif not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_decimal(col.type)):
        return None
    mag = num.abs().to_numpy()
    if np.isnan(mag).all():
        return None
    which = np.searchsorted(EPOCH_BOUNDS, mag, side="right")           # the unit each value's magnitude says
    unit = EPOCH_UNITS[int(np.searchsorted(EPOCH_BOUNDS, np.nanmedian(mag), side="right"))]
    us = (num.where((which == EPOCH_UNITS.index(unit)) & ~np.isnan(mag)) * EPOCH_TO_US[unit]).round()
    lo, hi = (pd.Timestamp(f"{y}-01-01", tz="UTC").value // 1000 for y in EPOCH_YEARS)
    return pd.to_datetime(us.where((us >= lo) & (us < hi)), unit="us", utc=True), unit


NUMERIC_DATE = r"^\s*(\d{1,2})([/.\-])(\d{1,2})[/.\-]\d{2,4}\b"     # 05/10/2026, 13.10.2026, 10-13-2026


def _date_order(s) -> tuple[bool, str, np.ndarray]:
    """(day first?, note, rows that cannot be read) for dates written with numbers only. One order per column, from
    the values that tell: a first number above 12 is a day (13/10/2026), a second one above 12 makes the column
    month-first (10/13/2026). Per value, a parser would read 05/10/2026 as 10 May beside 13/10/2026 as 13 October:
    a day-first export would be silently half wrong. A column showing both orders has its undecidable values (both
    numbers 12 or below) unparsable; one showing neither is read day-first when written with dots (05.10.2026: that
    is how the dotted form is used) and month-first otherwise, and the report says so."""
    import pandas as pd

    m = s.str.extract(NUMERIC_DATE) if s.map(lambda x: isinstance(x, str)).any() else None
    none = np.zeros(len(s), dtype=bool)
    if m is None or m[0].isna().all():
        return False, "", none
    first, second = pd.to_numeric(m[0]).to_numpy(), pd.to_numeric(m[2]).to_numpy()
    with np.errstate(invalid="ignore"):
        day, month = first > 12, second > 12
    if day.any() and month.any():
        return False, "dates in both day-first and month-first order", ~np.isnan(first) & ~day & ~month
    if day.any():
        return True, "day-first dates (13/10/2026 is 13 October)", none
    if month.any():
        return False, "month-first dates (10/13/2026 is 13 October)", none
    if (m[1] == ".").all() or (m[1].dropna() == ".").all():
        return True, "day-first dates (written with dots; no number above 12 to tell)", none
    return False, "month-first dates (no number above 12 to tell)", none


def _whole(x, lo: int = -2 ** 63, hi: int = 2 ** 63 - 1) -> int:
    """x as an int when it is a whole number in [lo, hi] (text of digits, an int, a whole float or decimal), compared
    exactly (never through a float, which would reject 1800000000000000001); else ValueError."""
    w = int(x.strip()) if isinstance(x, str) else int(x)
    if (not isinstance(x, str) and w != x) or not lo <= w <= hi:
        raise ValueError(x)
    return w


def _cast_lists(typ: pa.DataType, col: pa.Array):
    """A list column of another list or element type (list<int32>, large_list<int64>, list<string> of numbers, ...)
    in the contract's list type; a list holding a value that is not a whole int64 is unparsable."""
    try:
        return col.cast(typ), np.zeros(len(col), dtype=bool), ""
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    out, bad = [], np.zeros(len(col), dtype=bool)
    for i, x in enumerate(col.to_pylist()):
        try:
            out.append(None if x is None else [_whole(t) for t in x])
        except (ValueError, TypeError, OverflowError, ArithmeticError):
            out.append(None)
            bad[i] = True
    return pa.array(out, typ), bad, ""


INT_TEXT = r"\s*[+-]?\d+\s*"
EXACT_FLOAT = 2.0 ** 53           # beyond it a float is no longer every whole number: an id there is not exact


def _parse_int(typ: pa.DataType, col: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """An integer column exactly — never through float64, which rounds a 64-bit id (1800000000000000001 to
    1800000000000000000) and would merge two users — and a mask of the present values that are not a whole number
    the contract's type can hold (text of digits; a float or other number only when whole and below 2**53)."""
    import pandas as pd

    info = np.iinfo(typ.to_pandas_dtype())
    lo, hi = int(info.min), int(info.max)
    if pa.types.is_integer(col.type):
        try:
            return col.cast(typ), np.zeros(len(col), dtype=bool)       # a safe cast: fails on any value out of range
        except pa.ArrowInvalid:
            values = col.to_pylist()
    elif pa.types.is_floating(col.type):
        x = col.to_numpy(zero_copy_only=False).astype(np.float64)
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(x) & (x == np.round(x)) & (np.abs(x) <= EXACT_FLOAT) & (x >= lo) & (x <= hi)
        return (pa.array(np.where(ok, x, 0).astype(np.int64), pa.int64(), mask=~ok).cast(typ),
                ~ok & ~np.isnan(x))
    elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or pa.types.is_dictionary(col.type):
        import pyarrow.compute as pc

        try:                             # every value digits within range (the usual export): Arrow's exact cast
            return pc.utf8_trim_whitespace(col.cast(pa.string())).cast(pa.int64()).cast(typ), np.zeros(len(col), bool)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        s = pd.Series(col.cast(pa.string()).to_pylist() if pa.types.is_dictionary(col.type) else col.to_pylist(),
                      dtype=object)
        digits = s.str.fullmatch(INT_TEXT).eq(True).to_numpy(dtype=bool)
        other = pd.to_numeric(s.where(~digits), errors="coerce").to_numpy(dtype=np.float64)
        values = [int(t) if d else (int(o) if o == o and o == round(o) and abs(o) <= EXACT_FLOAT else t)
                  for t, d, o in zip(s.tolist(), digits, other)]
    else:
        values = col.to_pylist()
    out, bad = [], np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values):
        if v is None:
            out.append(None)
            continue
        try:
            out.append(_whole(v, lo, hi))
        except (ValueError, TypeError, OverflowError, ArithmeticError):
            out.append(None)
            bad[i] = True
    return pa.array(out, typ), bad


def _parse(typ: pa.DataType, col: pa.ChunkedArray) -> tuple[pa.Array, np.ndarray, str]:
    """The column in the contract's type, a mask of rows whose non-null value could not be parsed, and a note on how
    it was read ("" or, for timestamps given as numbers, the epoch unit read off their magnitude)."""
    import pandas as pd

    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if col.type == typ:
        return col, np.zeros(len(col), dtype=bool), ""
    if pa.types.is_list(typ) and (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)
                                  or pa.types.is_fixed_size_list(col.type)):
        return _cast_lists(typ, col)
    if pa.types.is_integer(typ):
        return (*_parse_int(typ, col), "")
    s = col.to_pandas() if not pa.types.is_string(col.type) else pd.Series(col.to_pylist(), dtype=object)
    present = s.notna().to_numpy()
    if pa.types.is_timestamp(typ):
        epoch = _epoch_numbers(col, s)
        if epoch is not None:
            v, unit = epoch
            note = f"epoch {EPOCH_UNIT_NAMES[unit]} (the unit read off the numbers' magnitude)"
        else:
            dayfirst, note, unsure = _date_order(s)
            v = pd.to_datetime(s.where(~unsure), errors="coerce", utc=True, format="mixed", dayfirst=dayfirst)
        bad = present & v.isna().to_numpy()
        us = v.dt.as_unit("us").astype("int64").to_numpy()
        return pa.array(us, pa.int64(), mask=v.isna().to_numpy()).cast(typ), bad, note
    if pa.types.is_floating(typ):
        v = pd.to_numeric(s, errors="coerce")
        bad = present & v.isna().to_numpy()
        return pa.array(v.astype("float64"), typ, from_pandas=True), bad, ""
    if pa.types.is_boolean(typ):
        low = s.map(lambda x: None if x is None or (isinstance(x, float) and np.isnan(x)) else str(x).strip().lower())
        v = low.map(lambda x: True if x in _TRUE else False if x in _FALSE else None)
        bad = present & v.isna().to_numpy()
        return pa.array(v.tolist(), pa.bool_()), bad, ""
    if pa.types.is_list(typ):          # "[1, 2, 3]" or "1|2|3"
        out, bad = [], np.zeros(len(s), dtype=bool)
        for i, x in enumerate(s.tolist()):
            if x is None:
                out.append(None)
                continue
            try:
                vals = json.loads(x) if str(x).strip().startswith("[") else [int(t) for t in str(x).split("|") if t]
                out.append([int(t) for t in vals])
            except (ValueError, TypeError):
                out.append(None)
                bad[i] = True
        return pa.array(out, typ), bad, ""
    return pa.array(s.map(lambda x: None if x is None else str(x)).tolist(), typ), np.zeros(len(s), dtype=bool), ""


def conform(table: str, data: pa.Table) -> tuple[pa.Table, pa.Table, list[str], dict[str, str]]:
    """(clean rows in the contract's schema, unparsable rows with `quarantine_reason`, ignored extra columns, how a
    column was read where that needed a guess: {column: note}, e.g. {"ts": "epoch milliseconds"})."""
    schema = RAW_SCHEMAS[table]
    missing = [c for c in schema.names if c not in data.column_names]
    if missing:
        raise ImportError_(f"raw/{table}.{missing[0]}: rule=required_column: the contract's column{'s' if len(missing) > 1 else ''} "
                           f"{', '.join(missing)} {'are' if len(missing) > 1 else 'is'} missing (found "
                           f"{', '.join(data.column_names) or 'no columns'})")
    extra = [c for c in data.column_names if c not in schema.names]
    cols, reason, notes = {}, np.full(data.num_rows, None, dtype=object), {}
    for name in ((data.schema.metadata or {}).get(DECIMAL_COMMA_NOTE) or b"").decode().split(","):
        if name:
            notes[name] = "decimal commas (12,50 is 12.5: a semicolon-separated file)"
    for field in schema:
        arr, bad, note = _parse(field.type, data[field.name])
        reason[bad & (reason == None)] = f"{field.name}: rule=parse_{field.type}"  # noqa: E711
        cols[field.name] = arr
        if note:
            notes[field.name] = f"{notes[field.name]}; {note}" if field.name in notes else note
    if table in TIME_COLUMN:
        tc = TIME_COLUMN[table]
        null_time = np.asarray(cols[tc].is_null().to_numpy(zero_copy_only=False))
        reason[null_time & (reason == None)] = f"{tc}: rule=not_null (a fact row needs its time)"  # noqa: E711
    ok = np.array([r is None for r in reason], dtype=bool)
    clean = pa.table(cols, schema=schema)
    bad_rows = data.filter(pa.array(~ok)).cast(pa.schema([(c, pa.string()) for c in data.column_names])) \
        if (~ok).any() else pa.table({c: pa.array([], pa.string()) for c in data.column_names})
    bad_rows = bad_rows.append_column("quarantine_reason", pa.array(reason[~ok].tolist(), pa.string()))
    return clean.filter(pa.array(ok)), bad_rows, extra, notes


def import_tables(settings: Settings, files: dict[str, list[Path]], loaded) -> dict:
    """Import, then validate; returns the report (also written to reports/import/<batch>.json)."""
    import pyarrow.compute as pc

    from jobs.validate_raw import validate_raw_table

    wh = Warehouse(settings.warehouse)
    batch = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    report: dict = {"batch": batch, "tables": {}}
    unknown = [t for t in files if t not in RAW_SCHEMAS]
    if unknown:
        raise ImportError_(f"no contract table named {unknown[0]!r} (tables: {', '.join(RAW_TABLES)})")
    days_by_table: dict[str, list[str]] = {}
    prepared = {}
    for table in [t for t in ORDER if t in files]:
        parts = [_read_file(table, f) for f in files[table]]
        rows_in = sum(p.num_rows for p in parts)
        clean, bad, extra, read_as = [], [], set(), {}
        for p in parts:
            c, b, e, notes = conform(table, p)
            clean.append(c)
            bad.append(b)
            extra.update(e)
            for col, note in notes.items():
                read_as.setdefault(col, set()).add(note)
        data = pa.concat_tables(clean) if clean else RAW_SCHEMAS[table].empty_table()
        bad_t = pa.concat_tables(bad, promote_options="permissive") if bad else None
        n_bad = bad_t.num_rows if bad_t is not None else 0
        limit = loaded.config.platform.validation.threshold(table)
        if rows_in and n_bad / rows_in > limit:       # nothing written: the files stay as they are
            rules = Counter(bad_t["quarantine_reason"].to_pylist()).most_common(3)
            raise ImportError_(f"raw/{table}.(table): rule=max_bad_share: {n_bad} of {rows_in} rows "
                               f"({100 * n_bad / rows_in:.3f} %) cannot be parsed, above validation.max_bad_share "
                               f"{100 * limit:.3f} % for {table}: " + "; ".join(f"{r} {n}" for r, n in rules))
        prepared[table] = (data, bad_t, n_bad, rows_in, extra, read_as)
    # every table parsed and within its bad share: now write
    for table, (data, bad_t, n_bad, rows_in, extra, read_as) in prepared.items():
        if n_bad:
            q = wh.quarantine(table, None).parent / "import"
            q.mkdir(parents=True, exist_ok=True)
            pq.write_table(bad_t, q / f"{batch}.parquet")
        entry = {"files": [str(f) for f in files[table]], "rows_in": rows_in, "unparsable": n_bad,
                 "unparsable_by_rule": dict(Counter(bad_t["quarantine_reason"].to_pylist())) if n_bad else {},
                 "ignored_columns": sorted(extra), "read_as": {c: sorted(v) for c, v in sorted(read_as.items())}}
        if table in PARTITIONED:
            tc = TIME_COLUMN[table]
            day = pc.strftime(data[tc], format="%Y-%m-%d")
            days = sorted(set(day.to_pylist()))
            for d in days:
                folder = wh.raw_partition(table, d)
                folder.mkdir(parents=True, exist_ok=True)
                pq.write_table(data.filter(pc.equal(day, d)), folder / f"import-{batch}.parquet")
            entry["days"] = [days[0], days[-1]] if days else []
            days_by_table[table] = days
        else:
            wh.replace_raw(table, None, data)
        entry["rows_written"] = data.num_rows
        report["tables"][table] = entry
        log.info("import raw/%s: %d rows in, %d written, %d unparsable %s", table, rows_in, data.num_rows, n_bad,
                 entry["unparsable_by_rule"])
    # the days inside the imported range that a fact table has no rows for: explicit empty days where that is normal
    # (validation.allow_empty: no item changes, no push history yet), a warning where it is not
    all_days = sorted({d for days in days_by_table.values() for d in days})
    for table, days in days_by_table.items():
        if not all_days:
            break
        first, last = date.fromisoformat(days[0] if days else all_days[0]), date.fromisoformat(all_days[-1])
        span = [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
        gaps = [d for d in span if d not in days and not wh.raw_partition(table, d).exists()]
        entry = report["tables"][table]
        if table in loaded.config.platform.validation.allow_empty:
            for d in gaps:
                wh.raw_partition(table, d).mkdir(parents=True, exist_ok=True)
                pq.write_table(RAW_SCHEMAS[table].empty_table(), wh.raw_partition(table, d) / f"import-{batch}-empty.parquet")
            entry["empty_days_written"] = gaps
        elif gaps:
            entry["days_without_rows"] = gaps
    # validation: the night of the newest imported day of any fact table
    last = max((d[-1] for d in days_by_table.values() if d), default=None)
    if last is None:
        snaps = [t for t in ("users", "items") if t in files]
        report["validated_as_of"] = None
        report["note"] = f"only dimensions imported ({', '.join(snaps)}): validated with the next night"
    else:
        report["validated_as_of"] = last
        for table in [t for t in ORDER if t in files or t == "push_log"]:
            entry = report["tables"].setdefault(table, {"files": [], "rows_in": 0, "unparsable": 0,
                                                        "unparsable_by_rule": {}, "rows_written": 0})
            try:
                v = validate_raw_table(wh, table, last, loaded.config.platform.validation)
            except Exception as e:          # DataQualityError: table, column and rule; nothing moved
                entry["validation"] = {"success": False, "failures": getattr(e, "failures", [str(e)])}
                report["success"] = False
                continue
            older = v.older_partitions or {}
            by_rule = Counter(v.by_rule)
            for d in older:
                by_rule.update(_manifest(wh, table, d).get("by_rule", {}))
            entry["validation"] = {"success": True,
                                   "quarantined": v.quarantined + sum(c["rows_quarantined"] for c in older.values()),
                                   "by_rule": dict(by_rule),
                                   "rows_kept": v.rows + sum(c["rows_kept"] for c in older.values()),
                                   "partitions": 1 + len(older), "warnings": v.warnings}
    report.setdefault("success", True)
    path = wh.root / "reports" / "import" / f"{batch}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str))
    report["report"] = str(path)
    return report


def _manifest(wh: Warehouse, table: str, ds: str) -> dict:
    from jobs.validate_raw import MANIFEST

    f = wh.quarantine(table, ds) / MANIFEST
    return json.loads(f.read_text()) if f.exists() else {}


def lines(report: dict) -> list[str]:
    out = [f"import {report['batch']}" + (f": validated as the night of {report['validated_as_of']}"
                                            if report.get("validated_as_of") else "")]
    for table, e in report["tables"].items():
        v = e.get("validation", {})
        out.append(f"{'ok  ' if v.get('success', True) else 'FAIL'}  raw/{table:<13} {e['rows_in']:>10,} rows in, "
                   f"{e.get('rows_written', 0):>10,} written, {e['unparsable']:>6,} unparsable"
                   + (f", {v['quarantined']:,} quarantined by validation, {v['rows_kept']:,} kept in "
                      f"{v['partitions']} partition(s)" if v.get("success") else ""))
        for rule, n in e["unparsable_by_rule"].items():
            out.append(f"        unparsable {n:,}: {rule}")
        for rule, n in (v.get("by_rule") or {}).items():
            out.append(f"        quarantined {n:,}: {rule}")
        if e.get("ignored_columns"):
            out.append(f"        ignored columns (not in the contract): {', '.join(e['ignored_columns'])}")
        for col, how in (e.get("read_as") or {}).items():
            out.append(f"        {col} read as {' / '.join(how)}")
        if e.get("empty_days_written"):
            out.append(f"        empty days written: {len(e['empty_days_written'])} ({e['empty_days_written'][0]} ..)")
        if e.get("days_without_rows"):
            out.append(f"        WARNING days without rows: {', '.join(e['days_without_rows'][:5])}")
        for f in v.get("failures", []):
            out.append(f"        {f}")
        for w in v.get("warnings", []) or []:
            out.append(f"        warning: {w}")
    out.append(f"report: {report.get('report')}")
    return out


def run(args, settings: Settings) -> dict:
    from core.config.loader import load_config

    if args.table:
        files = {args.table: [Path(p) for p in args.paths]}
    else:
        if len(args.paths) != 1 or not Path(args.paths[0]).is_dir():
            raise ImportError_("give one folder holding <table>.csv|parquet or <table>/ folders, or --table NAME "
                               "with its files")
        files = find_files(Path(args.paths[0]))
        if not files:
            raise ImportError_(f"{args.paths[0]}: no file named after a contract table ({', '.join(RAW_TABLES)})")
    for table, fs in files.items():
        for f in fs:
            if not f.is_file():
                raise ImportError_(f"raw/{table}.(table): rule=file_exists: {f} does not exist")
    return import_tables(settings, files, load_config(settings.conf_dir))
