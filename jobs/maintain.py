"""Compact and vacuum the pipeline's Delta tables (query results unchanged).

    spark-submit jobs/maintain.py --conf conf/demo.yaml
"""

from _common import emit, log_to_stderr, parser

from lstmad import pipeline
from lstmad.config import load_config


def main(argv=None) -> None:
    args = parser(__doc__.splitlines()[0], dated=False).parse_args(argv)
    emit(pipeline.maintain(load_config(args.conf)))


if __name__ == "__main__":
    log_to_stderr()
    main()
