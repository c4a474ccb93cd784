"""lstmad bench night: the sizing model on a hand-worked line, and one tiny fleet's night end to end (its
counts against the farm it landed)."""

import os

import pytest

from lstmad.benchmarks import night


def test_the_sizing_model_separates_fixed_and_per_asset_cost():
    # nights of 20 s + 0.05 s per asset on 2 cores
    results = [{"assets": n, "night_seconds": 20 + 0.05 * n} for n in (10, 100, 1000)]
    model = night.sizing(results, cores=2)
    assert model["fixed_s"] == pytest.approx(20) and model["per_asset_s"] == pytest.approx(0.05)
    assert model["predicted_minutes_10000_assets_here"] == pytest.approx((20 + 500) / 60, abs=0.05)
    # per-asset work: 0.05 s × N × 2 cores of core-seconds, spread over the 3,580 s a 60-minute night leaves
    assert model["cores_for_a_60_minute_night_10000_assets"] == 1  # 1,000 core-s
    assert model["cores_for_a_60_minute_night_100000_assets"] == 3  # 10,000 core-s / 3,580 s = 2.8
    flat = night.sizing([{"assets": 1, "night_seconds": 30}, {"assets": 2, "night_seconds": 29}], cores=2)
    assert "note" in flat and "predicted_minutes_10000_assets_here" not in flat


def test_the_cluster_check_spreads_only_the_per_asset_part_over_the_cluster_cores():
    model = {"fixed_s": 20.0, "per_asset_s": 0.05}
    # 1,000 assets measured here on 2 cores: 20 + 50 s; on a 4-core cluster the 50 s of per-asset work halve
    check = night.cluster_check({"assets": 1000, "night_seconds": 52.0}, model, local_cores=2, cluster_cores=4)
    assert check["predicted_night_seconds"] == pytest.approx(45.0)
    assert check["measured_over_predicted"] == pytest.approx(52 / 45, abs=1e-3) and check["within_30_percent"]
    slow = night.cluster_check({"assets": 1000, "night_seconds": 60.0}, model, local_cores=2, cluster_cores=4)
    assert not slow["within_30_percent"] and "fixed cost is this machine's" in slow["note"]
    # with a probe: 10 assets measured on the cluster at 40 s (its own fixed cost) + 990 assets × 0.025 s
    probed = night.cluster_check({"assets": 1000, "night_seconds": 70.0}, model, local_cores=2, cluster_cores=4,
                                 probe={"assets": 10, "night_seconds": 40.0})
    assert probed["predicted_night_seconds"] == pytest.approx(64.75)
    assert probed["predicted_with_the_local_fixed_cost"] == pytest.approx(45.0)
    assert probed["within_30_percent"] and probed["fixed_cost_probe"]["assets"] == 10


def test_memory_growth_is_taken_between_the_two_largest_sizes_against_the_night_data():
    split = lambda d, j, w: {"driver": d, "jvm": j, "python_workers": w}  # noqa: E731
    results = [{"assets": 10, "peak_pss_mb": 1600.0, "own_peak_pss_by_process_mb": split(500, 600, 500)},
               {"assets": 1000, "peak_pss_mb": 2600.0, "own_peak_pss_by_process_mb": split(800, 1000, 800)},
               {"assets": 3000, "peak_pss_mb": 3000.0, "own_peak_pss_by_process_mb": split(1150, 1050, 800)}]
    memory = night.memory_growth(results, channels=26)
    # the night's values as doubles: 26 channels × 1,440 rows × 8 bytes = 299,520 bytes = 0.2856 MiB per asset
    assert memory["night_data_mb_per_asset"] == 0.2856
    # 400 MB over 2,000 more assets: 0.2 MB per asset, within the night's data; 10 → 1,000 is not used
    assert memory["between_assets"] == [1000, 3000] and memory["growth_mb_per_asset"] == pytest.approx(0.2)
    assert memory["own_peak_growth_mb_per_asset_by_process"] == pytest.approx(
        {"driver": 0.175, "jvm": 0.025, "python_workers": 0.0})
    assert memory["within_the_night_data"] is True
    results[-1]["peak_pss_mb"] = 3800.0  # 0.6 MB per asset: more than the night's values
    assert night.memory_growth(results, channels=26)["within_the_night_data"] is False
    assert "growth_mb_per_asset" not in night.memory_growth(results[:1], channels=26)


def test_tree_memory_counts_pages_shared_by_forked_processes_once(tmp_path):
    """A process that fills 200 MB and then forks: both resident sets hold the 200 MB, the proportional sets
    split it — summed RSS counts it twice, summed PSS once."""
    import contextlib
    import subprocess
    import sys
    import time

    import psutil

    from lstmad.benchmarks.common import tree_memory

    if not hasattr(psutil.Process().memory_full_info(), "pss"):
        pytest.skip("this system does not report proportional set sizes (no /proc/PID/smaps)")
    ready = tmp_path / "ready"
    script = (f"import os, time\nblock = bytearray(200 * 2**20)\nblock[::4096] = b'x' * len(block[::4096])\n"
              f"pid = os.fork()\nopen({str(ready)!r} + str(pid == 0), 'w').close()\ntime.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 30
        while not ((tmp_path / "readyTrue").exists() and (tmp_path / "readyFalse").exists()):
            assert time.time() < deadline, "the forked processes did not start"
            time.sleep(0.05)
        rss, pss = tree_memory(psutil.Process(parent.pid))
        mib = 2**20
        assert set(pss) == {"driver", "python_workers"}  # the root is the driver, its fork a worker
        assert rss > 2 * 200 * mib  # each resident set holds the block
        assert rss - sum(pss.values()) > 180 * mib  # the proportional sets hold it once between them
        assert pss["driver"] > 100 * mib and pss["python_workers"] > 100 * mib  # half each
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            for process in psutil.Process(parent.pid).children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()
        parent.kill()
        parent.wait()


@pytest.mark.spark
def test_one_night_of_a_tiny_fleet_end_to_end_here_and_on_a_loopback_cluster(tmp_path):
    result = night.run(tmp_path / "night.json", assets=(2,), channels=3, workdir=tmp_path, progress=lambda _: None,
                       cluster_assets=2, cluster_workers=2)
    (size,) = result["sizes"]
    assert size["values"] == 2 * 3 * 1440 and size["rows_read"] == size["n_scores"] == 2 * 1440
    assert set(size["stage_seconds"]) == {"spark_session", "prepare", "score_intervals_commit", "drift"}
    assert size["night_seconds"] >= sum(size["stage_seconds"].values())
    assert result["values_per_s_per_core"] == pytest.approx(
        2 * 3 * 1440 / (size["night_seconds"] * os.cpu_count()), rel=1e-3)
    assert size["peak_rss_mb"] > 0 and (tmp_path / "night.json").exists()
    assert 0 < size["peak_pss_mb"] <= size["peak_rss_mb"]
    assert size["peak_pss_mb"] == pytest.approx(sum(size["peak_pss_by_process_mb"].values()), abs=0.5)
    for role, own_peak in size["own_peak_pss_by_process_mb"].items():  # each at least its share of the peak
        assert own_peak >= size["peak_pss_by_process_mb"][role]
    assert size["peak_pss_by_process_mb"]["jvm"] > 0 and size["peak_pss_by_process_mb"]["driver"] > 0
    # the same night once more on a 2-worker standalone cluster: the same rows read and scored
    on_cluster = result["cluster_check"]
    assert on_cluster["rows_read"] == on_cluster["n_scores"] == 2 * 1440
    assert on_cluster["n_intervals"] == size["n_intervals"]
    assert "no sizing model" in on_cluster["note"]  # one fleet size: nothing to predict from


def test_prepare_tasks_grow_with_the_source_so_a_task_holds_about_the_same_rows():
    from lstmad.stages.prepare import SOURCE_BYTES_PER_TASK, prepare_partitions

    assert prepare_partitions(2, 4, 3 * 2**20) == 4                       # a small night: the configured floor
    assert prepare_partitions(2, 4, 628 * 2**20) == 20                    # 628 MB of source: ⌈628 / 32⌉
    assert prepare_partitions(8, 4, 0) == 8                               # every core busy
    assert prepare_partitions(2, 4, 10 * SOURCE_BYTES_PER_TASK + 1) == 11
