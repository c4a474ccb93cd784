"""Train, evaluate, log to MLflow, register and maybe promote the pipeline's detector.

    spark-submit jobs/train.py --conf conf/demo.yaml
    spark-submit jobs/train.py --conf conf/demo.yaml --window-end 2026-02-10   # on the recent window
"""

from _common import emit, log_to_stderr, optional_date, parser

from lstmad import pipeline
from lstmad.config import load_config


def main(argv=None) -> None:
    p = parser(__doc__.splitlines()[0], dated=False)
    p.add_argument("--window-end", type=optional_date,
                   help="train on the sliding window (train.window_days, train.eval_days) ending at this date")
    args = p.parse_args(argv)
    config = load_config(args.conf)
    if args.window_end and config.train.window_days > 0:  # the DAG always sends the night
        config = pipeline.training_window(config, args.window_end)
    result = pipeline.train(config)
    emit({k: v for k, v in result.items() if k != "history"})


if __name__ == "__main__":
    log_to_stderr()
    main()
