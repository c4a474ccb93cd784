"""Drift of one scored date against the champion's training reference, into drift_metrics (lstmad drift).

Options are those of `lstmad drift --help`:

    spark-submit jobs/drift.py --conf conf/demo.yaml --date 2026-01-20
"""

from _common import log_to_stderr, run


def main(argv=None) -> None:
    run("drift", argv)


if __name__ == "__main__":
    log_to_stderr()
    main()
