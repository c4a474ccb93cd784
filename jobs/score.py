"""Score one date's tensor blocks (or a backfill range with --end) with the champion model into anomaly_scores
and anomaly_intervals.

    spark-submit jobs/score.py --conf conf/demo.yaml --date 2026-01-20
    spark-submit jobs/score.py --conf conf/demo.yaml --date 2026-01-01 --end 2026-01-31   # backfill, one pass
    spark-submit jobs/score.py --conf conf/demo.yaml --date 2026-01-24 --end 2026-01-30 --model-version 2
"""

import datetime as dt

from _common import emit, log_to_stderr, parser

from lstmad import pipeline
from lstmad.config import load_config


def main(argv=None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--end", type=dt.date.fromisoformat, help="last date of a backfill range, YYYY-MM-DD")
    p.add_argument("--model-version", help="a registered version to score with instead of the champion")
    args = p.parse_args(argv)
    if args.date is None:
        p.error("--date is required")
    config = load_config(args.conf)
    chosen = pipeline.version_bundle(config, args.model_version) if args.model_version else None
    emit(pipeline.score(config, args.date, champion=chosen) if args.end is None
         else pipeline.score_range(config, args.date, args.end, champion=chosen))


if __name__ == "__main__":
    log_to_stderr()
    main()
