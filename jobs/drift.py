"""Drift of one scored date against the champion's training reference, into drift_metrics.

    spark-submit jobs/drift.py --conf conf/demo.yaml --date 2026-01-20
"""

from _common import log_to_stderr, run_dated_step

from lstmad import pipeline


def main(argv=None) -> None:
    run_dated_step(pipeline.drift, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    log_to_stderr()
    main()
