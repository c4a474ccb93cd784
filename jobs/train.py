"""Train, evaluate, log to MLflow, register and maybe promote the pipeline's detector.

    spark-submit jobs/train.py --conf conf/demo.yaml
"""

from _common import emit, log_to_stderr, parser

from lstmad import pipeline
from lstmad.config import load_config


def main(argv=None) -> None:
    args = parser(__doc__.splitlines()[0], dated=False).parse_args(argv)
    result = pipeline.train(load_config(args.conf))
    emit({k: v for k, v in result.items() if k != "history"})


if __name__ == "__main__":
    log_to_stderr()
    main()
