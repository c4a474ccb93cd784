"""Score one date's tensor blocks with the champion model into anomaly_scores and anomaly_intervals.

    spark-submit jobs/score.py --conf conf/demo.yaml --date 2026-01-20
"""

from _common import run_dated_step

from lstmad import pipeline


def main(argv=None) -> None:
    run_dated_step(pipeline.score, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
