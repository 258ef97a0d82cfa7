"""Say in Airflow's UI what an in-process run was (issue 22.5).

`make run` runs `hermes_nightly` and `hermes_hourly` with `airflow dags test`: every task runs inside that one
process, so its log is the command's output (var/logs/...), not a file on a worker, and the run's start is its
logical date, so the UI shows a duration of days. This writes a note on the DAG run and on each of its task
instances saying so and where the log is — the first thing a data engineer sees when they open the run.

    python infra/airflow_note.py DAG_ID LOGICAL_DATE LOG_PATH
"""
from __future__ import annotations

import argparse
from datetime import datetime, timezone


def note_text(log_path: str, seconds: int | None) -> str:
    took = f" It took {seconds} s of wall time;" if seconds is not None else ""
    return (f"In-process run by `make run` (`airflow dags test`): every task ran inside that one command, so its log is "
            f"{log_path} (\"Log file not found on worker\" is expected here).{took} the duration the UI shows counts "
            "from the logical date, not from when the run started. Runs triggered through the scheduler "
            "(`make ui`, `infra/prod.sh`) have per-task logs and true durations.")


def annotate(dag_id: str, logical_date: datetime, text: str) -> int:
    """Sets the note of the DAG run(s) of dag_id at logical_date and of all their task instances; returns how many
    task instances were noted (0 when there is no such run)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    noted = 0
    with create_session() as session:
        for run in session.query(DagRun).filter(DagRun.dag_id == dag_id, DagRun.logical_date == logical_date):
            run.note = text[:1000]
            for ti in run.get_task_instances(session=session):
                ti.note = text[:1000]
                noted += 1
    return noted


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dag_id")
    p.add_argument("logical_date", help="ISO date or date-time (UTC), as given to `airflow dags test`")
    p.add_argument("log_path")
    p.add_argument("--seconds", type=int, default=None, help="the run's wall time, said in the note")
    a = p.parse_args(argv)
    at = datetime.fromisoformat(a.logical_date)
    at = at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at
    n = annotate(a.dag_id, at, note_text(a.log_path, a.seconds))
    if n == 0:
        raise SystemExit(f"no run of {a.dag_id} at {at.isoformat()} in Airflow's metadata: nothing to note")
    print(f"noted {a.dag_id} {at.isoformat()} and its {n} task instances: in-process run, log {a.log_path}")


if __name__ == "__main__":
    main()
