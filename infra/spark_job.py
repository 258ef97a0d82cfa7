"""What spark-submit runs for a Hermes stage (see jobs/submit.py):

    spark-submit --master URL --py-files hermes-<digest>.zip infra/spark_job.py <stage> --ds D [--config F] [--result F]

A file outside the packages on purpose: spark-submit puts the application's folder first on sys.path, and
inside jobs/ a module such as jobs/select.py would shadow the standard library's `select`.
"""
import importlib
import sys

from jobs.entry import spark_job_main
from jobs.tasks import STAGES

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in STAGES:
        sys.exit(f"usage: spark_job.py <stage> --ds YYYY-MM-DD [--config F] [--result F]; stages: {', '.join(STAGES)}")
    job = importlib.import_module(f"jobs.{sys.argv[1]}")
    spark_job_main(job.run, sys.argv[1], job.__doc__, sys.argv[2:])
