"""Prepare raw rows into tensor blocks; quarantine bad rows and values.

    spark-submit jobs/prepare.py --conf conf/demo.yaml --date 2026-01-20
    spark-submit jobs/prepare.py --conf conf/demo.yaml --training      # training + evaluation range
    spark-submit jobs/prepare.py --conf conf/demo.yaml --training --window-end 2026-02-10   # recent window
    python jobs/prepare.py --conf conf/demo.yaml --start 2026-01-01 --end 2026-01-14 --fit-stats
"""

import datetime as dt

from _common import emit, log_to_stderr, optional_date, parser

from lstmad import pipeline
from lstmad.config import load_config


def main(argv=None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--start", type=dt.date.fromisoformat)
    p.add_argument("--end", type=dt.date.fromisoformat)
    p.add_argument("--fit-stats", action="store_true")
    p.add_argument("--training", action="store_true")
    p.add_argument("--window-end", type=optional_date,
                   help="with --training: the sliding training window (train.window_days) ending at this date")
    p.add_argument("--accept-schema", action="store_true", help="record a changed source schema")
    args = p.parse_args(argv)
    config = load_config(args.conf)
    if args.training:
        if args.window_end and config.train.window_days > 0:  # the DAG always sends the night
            config = pipeline.training_window(config, args.window_end)
        emit({"prepared": pipeline.prepare_training_data(config)})
        return
    start, end = args.date or args.start, args.date or args.end
    if start is None or end is None:
        p.error("give --date, or --start and --end, or --training")
    emit(pipeline.prepare(config, start, end, fit_stats=args.fit_stats, accept_schema=args.accept_schema))


if __name__ == "__main__":
    log_to_stderr()
    main()
