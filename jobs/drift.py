"""Drift of one scored date against the champion's training reference, into drift_metrics.

    spark-submit jobs/drift.py --conf conf/demo.yaml --date 2026-01-20
"""

import logging
import sys

from _common import emit, parser

from lstmad import pipeline
from lstmad.config import load_config


def main(argv=None) -> None:
    p = parser(__doc__.splitlines()[0])
    args = p.parse_args(argv)
    if args.date is None:
        p.error("--date is required")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    emit(pipeline.drift(load_config(args.conf), args.date))


if __name__ == "__main__":
    main()
