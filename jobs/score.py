"""Score one date's tensor blocks (or a backfill range) into anomaly_scores and anomaly_intervals
(lstmad score).

Options are those of `lstmad score --help`:

    spark-submit jobs/score.py --conf conf/demo.yaml --date 2026-01-20
    spark-submit jobs/score.py --conf conf/demo.yaml --date 2026-01-01 --end 2026-01-31   # backfill, one pass
    spark-submit jobs/score.py --conf conf/demo.yaml --date 2026-01-24 --end 2026-01-30 --model-version 2
"""

from _common import log_to_stderr, run


def main(argv=None) -> None:
    run("score", argv)


if __name__ == "__main__":
    log_to_stderr()
    main()
