"""How fast `hermes import` parses a column into the contract's type, for the forms exports give it.

    .venv/bin/python bench/import_parse.py [--rows 2000000]

Per form: seconds to parse `--rows` values with `jobs.importer._parse` (the whole per-column step: type detection,
exact parsing, the mask of unparsable values), and rows per second. The forms: ids as Parquet int64 (the contract's
own type: nothing to do), as text (Arrow's exact cast), as text with one bad value (every value through Python ints,
so that no 64-bit id is rounded), as float; timestamps as epoch milliseconds (int64) and epoch seconds (text), as
ISO 8601 text, and as day-first numeric dates. Parsing is per column and per file; a table's files are read one
after another.
"""
from __future__ import annotations

import argparse
import gc
import time

import numpy as np
import pyarrow as pa

from core.contract import RAW_SCHEMAS
from jobs.importer import _parse


def forms(n: int):
    """(name, the contract's type, the column as Arrow) for each form, built one at a time: the Python strings a
    form is built from are freed before the next is timed (millions of live objects make a garbage collection
    during a timed parse cost a second)."""
    ids = np.arange(n, dtype=np.int64) + 10 ** 12
    uid = RAW_SCHEMAS["events"].field("user_id").type
    ts = RAW_SCHEMAS["events"].field("ts").type
    secs = 1_790_000_000 + np.arange(n, dtype=np.int64) % 2_000_000
    iso = lambda: np.datetime_as_string(secs.astype("datetime64[s]"), unit="s")  # noqa: E731
    yield "ids, Parquet int64 (the contract's type)", uid, pa.array(ids)
    yield "ids as text", uid, pa.array(ids.astype(str))
    yield "ids as text, one bad value", uid, pa.array(np.append(ids[:-1].astype(str), "12x"))
    yield "ids as float64", uid, pa.array(ids.astype(np.float64))
    yield "timestamps, epoch milliseconds (int64)", ts, pa.array(secs * 1000)
    yield "timestamps, epoch seconds as text", ts, pa.array(secs.astype(str))
    yield "timestamps, ISO 8601 text", ts, pa.array(np.char.add(iso(), "Z"))
    d = iso()
    day_first = np.char.add(np.char.add(np.char.add(np.char.add(np.char.add(np.char.add(
        [x[8:10] for x in d], "/"), [x[5:7] for x in d]), "/"), [x[0:4] for x in d]), " "), [x[11:16] for x in d])
    del d
    yield "timestamps, day-first numeric dates", ts, pa.array(day_first)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    a = ap.parse_args(argv)
    for _, typ, arr in forms(1000):               # warm-up: the lazy imports (pyarrow.compute, pandas' parsers)
        _parse(typ, pa.chunked_array([arr]))
    print(f"{'form':<44}{'seconds':>9}{'rows/s':>14}  unparsable  read as")
    for name, typ, arr in forms(a.rows):
        col = arr if isinstance(arr, pa.ChunkedArray) else pa.chunked_array([arr])   # as a table's column comes
        gc.collect()
        t0 = time.perf_counter()
        out, bad, note = _parse(typ, col)
        secs = time.perf_counter() - t0
        assert len(out) == a.rows
        print(f"{name:<44}{secs:>9.2f}{a.rows / secs:>14,.0f}  {int(bad.sum()):>10}  {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
