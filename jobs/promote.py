"""Put a registered version through the promotion gate (lstmad promote).

Options are those of `lstmad promote --help`:

    spark-submit jobs/promote.py --conf conf/demo.yaml --trained RUN     # the --result-name of jobs/train.py
    spark-submit jobs/promote.py --conf conf/demo.yaml --run-id abc123 --version 3
"""

from _common import log_to_stderr, run


def main(argv=None) -> None:
    run("promote", argv)


if __name__ == "__main__":
    log_to_stderr()
    main()
