"""Train, evaluate, log to MLflow, register and maybe promote the pipeline's detector (lstmad train).

Options are those of `lstmad train --help`:

    spark-submit jobs/train.py --conf conf/demo.yaml
    spark-submit jobs/train.py --conf conf/demo.yaml --window-end 2026-02-10   # on the recent window
    spark-submit jobs/train.py --conf conf/demo.yaml --no-promote --result-name RUN   # then jobs/promote.py
"""

from _common import log_to_stderr, run


def main(argv=None) -> None:
    run("train", argv)


if __name__ == "__main__":
    log_to_stderr()
    main()
