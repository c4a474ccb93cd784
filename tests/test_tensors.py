"""Tensor blocks: round trip, window counts across block/segment/date boundaries, window contents."""

import numpy as np
import pyarrow as pa

from lstmad import names
from lstmad.dates import DAY_US, MICROS
from lstmad.transforms.blocks import BLOCK_SCHEMA, Windows, build_blocks, windows_from_blocks
from lstmad.transforms.series import segment_ids

STEP = 3600  # hourly rows: 24 per day


def make_series(hours, channels=3, seed=0):
    ts = (np.asarray(hours, dtype=np.int64) * STEP * MICROS)
    values = np.random.default_rng(seed).normal(size=(ts.size, channels))
    labels = (np.arange(ts.size) % 17 == 0).astype(np.int8)
    return ts, values, labels


def blocks_table(ts, values, labels, window, block_rows, own_from=0, own_to=10 * DAY_US):
    rows = build_blocks("A", ts, values, segment_ids(ts, STEP), labels, window, block_rows, STEP, "s", own_from, own_to)
    return pa.Table.from_pylist(rows, schema=BLOCK_SCHEMA)


def reference_windows(ts, values, window):
    """Every window of every gap-free segment, by brute force: (end timestamp, W×C values)."""
    out = {}
    seg = segment_ids(ts, STEP)
    for end in range(window - 1, ts.size):
        if seg[end - window + 1] == seg[end]:
            out[int(ts[end])] = values[end - window + 1:end + 1]
    return out


def test_every_window_exactly_once_across_blocks_segments_and_dates():
    hours = list(range(0, 70)) + list(range(75, 80)) + list(range(90, 150))  # two gaps, three dates+
    ts, values, labels = make_series(hours)
    table = blocks_table(ts, values, labels, window=6, block_rows=20)
    assert table.num_rows > 6
    assert max(table.column(names.N_ROWS).to_pylist()) <= 20
    windows = windows_from_blocks(table, 6)
    expected = reference_windows(ts, values, 6)
    assert sorted(windows.end_us.tolist()) == sorted(expected)  # none lost, none twice
    batch = windows.batch(np.arange(len(windows))).numpy()
    for i, end in enumerate(windows.end_us):
        np.testing.assert_allclose(batch[i], expected[int(end)], rtol=1e-6)
    # blocks never span a date; the 5-row segment (< W... no: 5 < 6) yields no window
    starts = np.array(table.column(names.BLOCK_START).to_pylist())
    ends = starts + (np.array(table.column(names.N_ROWS).to_pylist()) - 1) * STEP * MICROS
    own_first = starts + np.array(table.column(names.N_HISTORY).to_pylist()) * STEP * MICROS
    assert np.all(own_first // DAY_US == ends // DAY_US)
    assert not any(75 * STEP * MICROS <= e <= 79 * STEP * MICROS for e in windows.end_us)


def test_overlap_is_at_most_w_minus_one_rows_and_values_round_trip():
    ts, values, labels = make_series(range(48))
    table = blocks_table(ts, values, labels, window=5, block_rows=16)
    histories = table.column(names.N_HISTORY).to_pylist()
    assert histories[0] == 0 and all(h == 4 for h in histories[1:])
    first = table.slice(0, 1).to_pylist()[0]
    np.testing.assert_array_equal(np.frombuffer(first[names.VALUES], np.float32).reshape(first[names.N_ROWS], 3),
                                  values[:first[names.N_ROWS]].astype(np.float32))
    np.testing.assert_array_equal(np.frombuffer(first[names.LABELS], np.int8), labels[:first[names.N_ROWS]])
    own_rows = sum(n - h for n, h in zip(table.column(names.N_ROWS).to_pylist(), histories))
    assert own_rows == 48


def test_history_rows_before_the_own_range_only_serve_as_context():
    ts, values, labels = make_series(range(48))  # day 0 and day 1
    table = blocks_table(ts, values, labels, window=5, block_rows=100, own_from=DAY_US, own_to=2 * DAY_US)
    assert table.column(names.DATE).to_pylist() == ["1970-01-02"]
    windows = windows_from_blocks(table, 5)
    assert len(windows) == 24  # one window ending at every hour of day 1
    assert windows.end_us.min() == DAY_US


def test_window_labels_last_and_any():
    arr = np.zeros((3, 4, 2), dtype=np.float32)
    w = Windows.from_array(arr, labels=np.array([0, 1, 0]))
    assert w.label_last.tolist() == [0, 1, 0] and w.batch(np.array([2])).shape == (1, 4, 2)
    ts, values, _ = make_series(range(10))
    labels = np.zeros(10, dtype=np.int8)
    labels[3] = 1
    windows = windows_from_blocks(blocks_table(ts, values, labels, window=4, block_rows=100), 4)
    # windows ending at rows 3..6 contain row 3
    assert windows.label_any.tolist() == [1, 1, 1, 1, 0, 0, 0]
    assert windows.label_last.tolist() == [1, 0, 0, 0, 0, 0, 0]


def test_mask_round_trip_and_masked_share_per_window():
    from lstmad.transforms.blocks import masked_share_of_windows, pack_mask, unpack_mask

    rng = np.random.default_rng(2)
    observed = rng.random((37, 5)) > 0.3
    assert np.array_equal(unpack_mask(pack_mask(observed, 37, 5), 37, 5), observed)
    assert len(pack_mask(observed, 37, 5)) == int(np.ceil(37 * 5 / 8))
    share = masked_share_of_windows(observed, 4)
    expected = [(~observed[i:i + 4]).sum() / 20 for i in range(34)]
    np.testing.assert_allclose(share, expected)


def test_streaming_reader_yields_every_window_once_with_bounded_reads(tmp_path):
    import pyarrow.parquet as pq

    from lstmad.io.tensor_store import read_blocks, stream_window_batches

    hours = list(range(0, 70)) + list(range(75, 150))
    ts, values, labels = make_series(hours)
    table = blocks_table(ts, values, labels, window=6, block_rows=20)
    for day in set(table.column(names.DATE).to_pylist()):
        folder = tmp_path / f"date={day}"
        folder.mkdir()
        part = table.filter(pa.compute.equal(table.column(names.DATE), day)).drop_columns([names.DATE])
        pq.write_table(part, folder / "part.parquet")
    dates = sorted(set(table.column(names.DATE).to_pylist()))
    expected = reference_windows(ts, values, 6)
    seen = {}
    for batch, windows, part in stream_window_batches(tmp_path, dates, 6, batch_size=7, blocks_per_read=2):
        assert batch.shape[0] <= 7 and len(windows.series) <= 2 * 20  # never more than 2 blocks held
        for end, window in zip(windows.end_us[part], batch.numpy()):
            assert int(end) not in seen
            seen[int(end)] = window.copy()  # the reader reuses its batch buffer
    assert set(seen) == set(expected)
    for end, window in seen.items():
        np.testing.assert_allclose(window, expected[end], atol=1e-6)
    assert len(windows_from_blocks(read_blocks(tmp_path, dates), 6)) == len(expected)


def test_content_version_is_the_same_for_the_same_blocks_however_they_are_split_over_files(tmp_path):
    """A date's version hashes its blocks, not its files: one file, or the same blocks in two files in another
    order, give one version; one changed value gives another. Each block's digest is checked by hand."""
    import hashlib

    import pyarrow.parquet as pq

    from lstmad.io.tensor_store import block_digests, content_version

    ts, values, labels = make_series(np.arange(200))
    table = blocks_table(ts, values, labels, window=6, block_rows=60).drop_columns([names.DATE])
    assert table.num_rows >= 3

    def write(root, parts):
        folder = root / f"{names.DATE}=2026-01-01"
        folder.mkdir(parents=True)
        for k, part in enumerate(parts):
            pq.write_table(part, folder / f"part-{k}.parquet")
        return content_version(root, "2026-01-01")

    one = write(tmp_path / "one", [table])
    reordered = table.take(list(range(table.num_rows))[::-1])
    assert write(tmp_path / "two", [reordered.slice(0, 2), reordered.slice(2)]) == one
    changed = table.to_pydict()
    changed[names.VALUES][1] = changed[names.VALUES][1][:-4] + b"\x00\x00\x80\x3f"
    assert write(tmp_path / "changed", [pa.table(changed, schema=table.schema)]) != one
    # the digest of one block, by hand: its columns in name order, each value length-prefixed
    first = table.slice(0, 1).to_pylist()[0]
    digest = hashlib.sha256()
    for name in sorted(first):
        value = first[name]
        data = b"\x00null" if value is None else value if isinstance(value, bytes) else str(value).encode()
        digest.update(len(data).to_bytes(8, "little") + data)
    assert block_digests(table.slice(0, 1)) == [digest.hexdigest()]
