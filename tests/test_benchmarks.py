"""Benchmark plumbing on small inputs (the benchmarks themselves are not tests): protocol splits, SKAB
file handling, the icing windows."""

import numpy as np
import pytest

from lstmad.benchmarks import icing, skab
from lstmad.benchmarks.common import DataMissingError
from lstmad.config import data_dir
from lstmad.data.synthetic import FarmSpec


def test_contamination_split_has_the_ratio_and_no_leak():
    normal, abnormal, test_normal = np.arange(0, 100), np.arange(100, 140), np.arange(200, 230)
    train, test = icing.contamination_split(normal, abnormal, test_normal, 0.25, 80)
    assert train.size == 80 and np.isin(train, abnormal).sum() == 20
    assert not np.intersect1d(train, test).size
    assert np.isin(test, abnormal).sum() == 20 and np.isin(test_normal, test).all()
    with pytest.raises(ValueError):
        icing.contamination_split(normal, abnormal, test_normal, 0.5, 100)


def test_icing_windows_follow_the_paper_protocol():
    data = icing.build(FarmSpec(turbines=2, days=3, step_s=600, seed=9), window=26, half_width=5)
    n_rows = 3 * 144
    assert len(data.windows) == 2 * (n_rows - 25)  # stride 1, never across turbines
    normal = np.flatnonzero(~data.abnormal)
    assert data.train_normal.size == round(0.7 * normal.size)
    assert np.union1d(data.train_normal, data.test_normal).tolist() == normal.tolist()
    assert data.windows.batch(np.array([0])).shape == (1, 26, 26)


def test_skab_windows_keep_train_and_test_apart():
    values = np.random.default_rng(0).normal(size=(600, 8))
    labels = (np.arange(600) >= 500).astype(int)
    train, test = skab.file_windows(values, labels, window=10)
    assert len(train) == 400 - 9 and len(test) == 200
    assert train.end_us.max() == 399 and test.end_us.min() == 400  # each score at the window's last row
    scaled = train.series.numpy()[:400]
    np.testing.assert_allclose(scaled.mean(axis=0), 0, atol=1e-6)  # scaler from the first 400 rows only
    assert test.label_last.sum() == 100


def test_false_alarms_before_and_after_the_onset_as_counted_by_hand():
    truth = np.array([0, 0, 1, 1, 0, 0, 1, 0], bool)
    assert skab.since_onset(truth).tolist() == [False, False, True, True, True, True, True, True]
    assert skab.since_onset(truth, anomalous_before=True).all()  # the anomaly began in the training rows
    flags = np.array([1, 0, 1, 0, 1, 1, 0, 0], bool)
    # file 1: normal rows before the onset 0, 1 (row 0 flagged); after it 4, 5, 7 (4 and 5 flagged).
    # file 2 began its anomaly in training: its 3 normal rows (one flagged) all count after the onset.
    split = skab.far_by_onset([flags, np.array([1, 0, 0, 1], bool)], [truth, np.array([0, 0, 0, 1], bool)],
                              [False, True])
    assert split["far_before_anomaly"] == 1 / 2
    assert split["far_after_anomaly_onset"] == (2 + 1) / (3 + 3)
    assert split["false_alarms_after_anomaly_onset_share"] == 3 / 4
    assert np.isnan(skab.far_by_onset([np.zeros(3, bool)], [np.zeros(3, bool)], [False])[
        "false_alarms_after_anomaly_onset_share"])


def test_the_anomaly_free_control_counts_by_row_position():
    first, end = skab.TRAIN_ROWS + 2, skab.TRAIN_ROWS + 5
    # two parts' test rows 400 … ; before: rows 400-401, during: 402-404, after: 405 on
    part_a = np.array([1, 0, 1, 1, 0, 1, 1], bool)   # before 1/2, during 2/3, after 2/2
    part_b = np.array([0, 0, 0, 0, 1, 0], bool)       # before 0/2, during 1/3, after 0/1
    rates = skab.far_by_position([part_a, part_b], (first, end))
    assert rates == {"before": 1 / 4, "span": 3 / 6, "after": 2 / 3}
    labels = np.zeros(1000, int)
    labels[[500, 501, 700]] = 1  # first anomalous row 500, the row after its last 701 …
    other = np.zeros(1000, int)
    other[600:652] = 1             # … and 600, 652: medians 550 and 676.5, rounded down
    assert skab.typical_anomaly_span([(None, labels), (None, other), (None, np.zeros(5, int))]) == (550, 676)
    with pytest.raises(ValueError, match="no file holds an anomaly"):
        skab.typical_anomaly_span([(None, np.zeros(5, int))])


def test_channel_shift_by_segment_against_a_hand_built_file():
    rows = skab.TRAIN_ROWS + 30
    train = np.tile([[-1.0], [1.0]], (skab.TRAIN_ROWS // 2, 8))  # mean 0, std 1 in every channel
    test = np.zeros((30, 8))
    test[10:20, 7] = 4.0   # the anomaly moves the last channel by 4 standard deviations
    test[20:, 5] = -3.0    # after it, the sixth sits 3 below its training mean
    labels = np.zeros(rows, int)
    labels[skab.TRAIN_ROWS + 10:skab.TRAIN_ROWS + 20] = 1
    shift = skab.channel_shift_by_segment([(np.vstack([train, test]), labels)])
    assert shift["before"] == dict.fromkeys(skab.SENSORS, 0.0)
    assert shift["anomaly"] == {**dict.fromkeys(skab.SENSORS, 0.0), skab.SENSORS[7]: 4.0}
    assert shift["after"] == {**dict.fromkeys(skab.SENSORS, 0.0), skab.SENSORS[5]: 3.0}
    # an anomaly that began in the training rows and ran to the end leaves "before" and "after" without a file
    inside = np.ones(rows, int)
    assert set(skab.channel_shift_by_segment([(np.vstack([train, test]), inside)])) == {"anomaly"}


def test_the_rows_the_leaderboard_conv_ae_can_flag_as_its_notebook_loop_marks_them():
    """SKAB's notebook loops `for data_idx in range(N_STEPS - 1, len(X) - N_STEPS + 1)` with len(X) the number
    of windows (rows − N_STEPS + 1): 200 test rows, 60-row windows → rows 59 … 81 only."""
    assert np.flatnonzero(skab.conv_ae_flaggable(200, 60)).tolist() == list(range(59, 82))
    for n_rows, n_steps in [(500, 60), (120, 60), (100, 10), (30, 10)]:
        n_windows = n_rows - n_steps + 1
        looped = np.zeros(n_rows, bool)
        looped[list(range(n_steps - 1, n_windows - n_steps + 1))] = True
        assert skab.conv_ae_flaggable(n_rows, n_steps).tolist() == looped.tolist()


def test_skab_reports_missing_data_clearly(tmp_path):
    with pytest.raises(DataMissingError, match="34 anomalous SKAB files"):
        skab.skab_files(tmp_path)


def test_the_anomaly_free_run_is_cut_into_consecutive_equal_parts(tmp_path):
    with pytest.raises(DataMissingError, match="anomaly-free.csv"):
        skab.anomaly_free_parts(tmp_path)
    folder = tmp_path / "skab" / "anomaly-free"
    folder.mkdir(parents=True)
    rows = ["datetime;" + ";".join(reversed(skab.SENSORS))]  # read by name, whatever the file's column order
    rows += [f"2020-02-08 13:30:{second:02d};" + ";".join(str(10 * second + c) for c in reversed(range(8)))
             for second in range(11)]
    (folder / "anomaly-free.csv").write_text("\n".join(rows) + "\n")
    parts = skab.anomaly_free_parts(tmp_path, parts=3)  # 11 rows → 3 parts of 3; rows 9 and 10 left out
    assert [part[:, 0].tolist() for part in parts] == [[0, 10, 20], [30, 40, 50], [60, 70, 80]]
    assert parts[1][2].tolist() == [50, 51, 52, 53, 54, 55, 56, 57]  # columns in SENSORS order


def test_each_left_out_part_is_judged_at_the_threshold_of_the_others():
    # budget 0.25 → the ⌈(n+1)·0.75⌉-th smallest of n pooled ratios; parts of 3 and 4 ratios, by hand:
    parts = [np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0, 7.0]), np.array([0.5, 8.0, 9.0])]
    # part 0 against [4…7, 0.5, 8, 9] (n 7 → 6th smallest: 8): none above; part 1 against [1, 2, 3, 0.5, 8, 9]
    # (n 6 → ⌈5.25⌉ = 6th: 9): none; part 2 against [1 … 7] (n 7 → 6th: 6): 8 and 9 of its 3
    np.testing.assert_allclose(skab.left_out_part_fars(parts, 0.25), [0.0, 0.0, 2 / 3])
    # a ratio equal to the threshold does not alarm: part 0 against [1 … 7] → 6, so 6.0 stays quiet, 6.5 alarms;
    # part 1 against [6, 6.5] (n 2 → ⌈2.25⌉ = 3 > 2: the largest, 6.5): only its 7
    np.testing.assert_allclose(skab.left_out_part_fars([np.array([6.0, 6.5]), np.arange(1.0, 8.0)], 0.25),
                               [0.5, 1 / 7])


@pytest.mark.skipif(not (data_dir() / "skab").is_dir(), reason="shared SKAB data set not present")
def test_skab_files_load_with_labels():
    files = skab.skab_files()
    values, labels = skab.load_file(files[0])
    assert values.shape[1] == 8 and values.shape[0] == labels.shape[0] > 400
    assert set(np.unique(labels)) <= {0, 1}


@pytest.mark.spark
@pytest.mark.skipif(not (data_dir() / "la_haute_borne").is_dir(), reason="shared la_haute_borne data set not present")
def test_prepare_bench_archive_and_pandas_baseline_agree_with_prepare(tmp_path, spark):
    """The bench's archive has exactly N rows over replicated assets, and its pandas baseline — written
    independently — quarantines and grids exactly what lstmad prepare does on it."""
    import datetime as dt

    import pyarrow.dataset as ds
    import yaml

    from lstmad import stages
    from lstmad.benchmarks import prepare as bench
    from lstmad.config import load_config

    archive = bench.build_archive(450_000, tmp_path / "raw")
    table = ds.dataset(tmp_path / "raw").to_table(columns=["Wind_turbine_name"])
    assert table.num_rows == archive["rows"] == 450_000
    assert len(set(table.column(0).to_pylist())) == 8  # 4 turbines, a second (noisy) replica begun
    conf = tmp_path / "bench.yaml"
    raw = {**archive["config"], "home": str(tmp_path / "home"),
           "spark": {"master": "local[2]", "shuffle_partitions": 2, "driver_memory": "1g"}}
    conf.write_text(yaml.safe_dump(raw))
    config = load_config(conf)
    start, end = dt.date(2014, 1, 1), dt.date(2014, 1, 31)
    summary = stages.prepare(config, start, end, fit_stats=True, spark=spark)
    baseline = bench.worker_pandas(str(conf), start.isoformat(), end.isoformat(), str(tmp_path / "b.parquet"))
    assert baseline["rows_read"] == summary["rows_read"]
    assert baseline["rows_quarantined"] == summary["rows_quarantined"]
    assert baseline["grid_rows"] == summary["grid_rows"]


@pytest.mark.spark
@pytest.mark.slow
def test_speed_bench_scores_every_window_in_process_in_spark_and_with_pyod(tmp_path):
    """lstmad bench score on a tiny archive: each path scores exactly the archive's windows, counted here by
    hand, and the JSON has the keys the issue names."""
    from lstmad.benchmarks import speed

    result = speed.run_score(tmp_path / "score.json", windows=3000, pyod_sizes=(3000,),
                             profiles=("lstm_forecaster",), workdir=tmp_path)
    # ceil(3000 / (8 assets × 144 rows)) = 3 days of one gap-free segment per asset: 8 × (3·144 − 25) windows
    expected = 8 * (3 * 144 - 25)
    entry = result["profiles"]["lstm_forecaster"]
    assert result["archive"]["windows"] == entry["inprocess"]["windows"] == entry["spark"]["windows"] == expected
    assert result["pyod_growth"][0]["windows"] == expected and result["pyod_growth"][0]["pyod_error"] is None
    # 25 steps × (layer 1: 2·4·64·(4 + 64) + 512; layer 2: 2·4·64·128 + 512) + the 64 → 4 head: 2·64·4
    assert entry["flops_per_window"] == 25 * (2 * 4 * 64 * 68 + 512 + 2 * 4 * 64 * 128 + 512) + 2 * 64 * 4
    for key in ("inprocess_windows_per_s", "spark_windows_per_s", "pyod_windows_per_s", "peak_rss_mb",
                "pyod_peak_rss_mb"):
        assert result[key] > 0, key
    assert result["gpu_windows_per_s"] is None or result["device"] != "cpu"
    assert (tmp_path / "score.json").exists()


def test_the_skab_normal_behaviour_models_and_their_drivers():
    # SENSORS lists SKAB's columns as its files do: the temperatures are the fifth and sixth
    factories = skab.skab_detectors("small", 1, 0, "cpu", drifting=(0, 5))
    for role, drivers in (("temperatures", (4, 5)), ("drifting", (0, 5))):
        plain, mahalanobis = factories[f"normal_behaviour_mean_{role}"](), \
            factories[f"normal_behaviour_mean_{role}_mahalanobis"]()
        assert plain.params.drivers == mahalanobis.params.drivers == drivers
        assert plain.params.residual_steps == mahalanobis.params.residual_steps == 13
        assert (plain.params.error_model, mahalanobis.params.error_model) == ("squared", "mahalanobis")
    assert "normal_behaviour_mean_drifting" not in skab.skab_detectors("small", 1, 0, "cpu")
    with pytest.raises(ValueError, match="every channel drifts"):
        skab.skab_detectors("small", 1, 0, "cpu", drifting=tuple(range(8)))


def test_drifting_channels_of_hand_built_parts():
    rows = skab.TRAIN_ROWS + 100
    train = np.tile([[-1.0], [1.0]], (skab.TRAIN_ROWS // 2, 8))  # mean 0, std 1 in every channel
    parts = []
    for later_level in (3.0, 1.0, 2.5):
        later = np.zeros((100, 8))
        later[:, 2] = later_level  # channel 2 sits 3, 1 and 2.5 sd away: median 2.5 > 2
        later[:60, 6] = 5.0        # channel 6 is 5 sd away on 60 of 100 later rows of every part: median 5 > 2
        later[:40, 7] = 5.0        # channel 7 on 40 of 100: median 0
        parts.append(np.vstack([train, later]))
    assert len(parts[0]) == rows
    assert skab.drifting_channels(parts) == (2, 6)
    assert skab.drifting_channels(parts, limit=2.5) == (6,)  # "more than": 2.5 is not
    np.testing.assert_allclose(skab.drift_distances(parts), [0, 0, 2.5, 0, 0, 0, 5, 0])
    with pytest.raises(ValueError, match="longer than 400 rows"):
        skab.drift_distances([train])


