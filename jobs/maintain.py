"""Compact and vacuum the pipeline's Delta tables; query results unchanged (lstmad maintain).

Options are those of `lstmad maintain --help`:

    spark-submit jobs/maintain.py --conf conf/demo.yaml
"""

from _common import log_to_stderr, run


def main(argv=None) -> None:
    run("maintain", argv)


if __name__ == "__main__":
    log_to_stderr()
    main()
