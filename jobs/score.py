"""Score one date's tensor blocks with the champion model into anomaly_scores and anomaly_intervals.

    spark-submit jobs/score.py --conf conf/demo.yaml --date 2026-01-20
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
    emit(pipeline.score(load_config(args.conf), args.date))


if __name__ == "__main__":
    main()
