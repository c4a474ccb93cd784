"""How Spark scoring cuts block files into task pieces: every block in exactly one piece, in file order."""

import pyarrow as pa
import pytest
import pyarrow.parquet as pq

from lstmad.spark.score import read_piece, work_items


def block_file(path, n_blocks, row_group_size):
    table = pa.table({"block_start": list(range(n_blocks)), "values": [b"x" * 10] * n_blocks})
    pq.write_table(table, path, row_group_size=row_group_size)
    return str(path)


def test_one_file_is_cut_so_every_core_gets_work_and_every_block_is_read_once(tmp_path):
    file = block_file(tmp_path / "one.parquet", 37, row_group_size=4)  # pieces cross row-group bounds
    items = work_items([file], parallelism=2, per_core=4)
    assert len(items) == 8 and [count for _, _, count in items] == [5] * 7 + [2]  # ceil(37 / 8) per piece
    read = [b for f, first, count in items for b in read_piece(f, first, count).column("block_start").to_pylist()]
    assert read == list(range(37))


def test_many_files_stay_whole(tmp_path):
    files = [block_file(tmp_path / f"{i}.parquet", 5, row_group_size=2) for i in range(12)]
    items = work_items(files, parallelism=2, per_core=4)
    assert items == [(f, 0, 5) for f in files]
    assert read_piece(files[0], 0, 5).num_rows == 5


def test_a_piece_decodes_only_the_row_groups_that_hold_it(tmp_path, monkeypatch):
    file = block_file(tmp_path / "groups.parquet", 40, row_group_size=8)
    decoded = []
    real = pq.ParquetFile.read_row_groups
    monkeypatch.setattr(pq.ParquetFile, "read_row_groups",
                        lambda self, groups, **kw: decoded.append(list(groups)) or real(self, groups, **kw))
    assert read_piece(file, 14, 5).column("block_start").to_pylist() == [14, 15, 16, 17, 18]
    assert decoded == [[1, 2]]  # blocks 14–18 lie in groups 1 (8–15) and 2 (16–23)


@pytest.mark.spark
def test_local_python_workers_start_with_the_scoring_libraries_already_imported(spark):
    """Workers fork from lstmad's daemon (spark/worker_daemon.py): a task that imports nothing finds torch and
    lstmad's scoring code loaded."""
    def forked_from(_):
        import os
        import sys

        # workers are reused across tasks, so the modules alone could come from an earlier task: the parent
        # process is what shows the daemon
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as handle:
            parent = handle.read().replace(b"\0", b" ").decode()
        return [("lstmad.spark.worker_daemon" in parent,
                 all(m in sys.modules for m in ("torch", "lstmad.spark.score", "lstmad.spark.prepare")))]

    assert spark.sparkContext.parallelize([0, 1], 2).map(forked_from).collect() == [[(True, True)], [(True, True)]]


def test_a_large_file_is_cut_into_pieces_of_at_most_the_block_cap(tmp_path):
    """However many assets a night holds, a task scores at most max_blocks blocks at a time."""
    file = block_file(tmp_path / "fleet.parquet", 300, row_group_size=32)
    items = work_items([file], parallelism=2, per_core=4, max_blocks=64)
    # ceil(300 / 8) = 38 per piece wanted for 8 pieces, within the cap of 64: 8 pieces; at 1,000 blocks the cap
    assert [count for _, _, count in items] == [38] * 7 + [34]
    big = block_file(tmp_path / "bigger.parquet", 1000, row_group_size=32)
    counts = [count for _, _, count in work_items([big], parallelism=2, per_core=4, max_blocks=64)]
    assert counts == [64] * 15 + [40] and sum(counts) == 1000
