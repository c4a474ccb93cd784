"""Prepare raw rows into tensor blocks; quarantine bad rows and values (lstmad prepare).

Options are those of `lstmad prepare --help`:

    spark-submit jobs/prepare.py --conf conf/demo.yaml --date 2026-01-20
    spark-submit jobs/prepare.py --conf conf/demo.yaml --training      # training + evaluation range
    spark-submit jobs/prepare.py --conf conf/demo.yaml --training --window-end 2026-02-10   # recent window
    python jobs/prepare.py --conf conf/demo.yaml --start 2026-01-01 --end 2026-01-14 --fit-stats
"""

from _common import log_to_stderr, run


def main(argv=None) -> None:
    run("prepare", argv)


if __name__ == "__main__":
    log_to_stderr()
    main()
