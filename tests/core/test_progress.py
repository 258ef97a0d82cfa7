"""Progress lines: counts, step and elapsed times, and an ETA from the average step."""
from __future__ import annotations

import logging

from core.progress import Progress


def test_progress_lines_say_what_is_done_and_when_the_rest_should_be(caplog):
    ticks = iter([100.0, 112.5, 130.0, 250.0])
    p = Progress("rollups ds=2026-10-30", total=3, log=logging.getLogger("hermes.test"), clock=lambda: next(ticks))
    with caplog.at_level(logging.INFO, logger="hermes.test"):
        first = p.done("user_day", rows=123456)
        second = p.done("item_day")
        last = p.done("open_slots")
    assert first == ("rollups ds=2026-10-30: 1/3 user_day done in 12.5 s (rows=123,456); 12.5 s elapsed, "
                     "ETA 25.0 s")
    assert second == "rollups ds=2026-10-30: 2/3 item_day done in 17.5 s; 30.0 s elapsed, ETA 15.0 s"
    assert last == "rollups ds=2026-10-30: 3/3 open_slots done in 2 min 0 s; 2 min 30 s elapsed, all done"
    assert [r.getMessage() for r in caplog.records] == [first, second, last]
