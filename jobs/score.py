"""Score one date's tensor blocks (or a backfill range with --end) with the champion model into anomaly_scores
and anomaly_intervals.

    spark-submit jobs/score.py --conf conf/demo.yaml --date 2026-01-20
    spark-submit jobs/score.py --conf conf/demo.yaml --date 2026-01-01 --end 2026-01-31   # backfill
"""

import datetime as dt

from _common import emit, log_to_stderr, parser

from lstmad import pipeline
from lstmad.config import load_config


def main(argv=None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--end", type=dt.date.fromisoformat, help="last date of a backfill range, YYYY-MM-DD")
    args = p.parse_args(argv)
    if args.date is None:
        p.error("--date is required")
    config = load_config(args.conf)
    emit(pipeline.score(config, args.date) if args.end is None else pipeline.score_range(config, args.date, args.end))


if __name__ == "__main__":
    log_to_stderr()
    main()
