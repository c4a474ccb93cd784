"""The GPU check script (lstmad/benchmarks/gpu_check.py) as a bare GPU image runs it: a fresh interpreter in
which Spark, MLflow, Delta, DuckDB, Airflow, PyOD and pytest cannot be imported, here on the CPU at its quick
sizes. Window counts and the forecaster's FLOPs are worked out by hand."""

import json
import subprocess
import sys

from tests.conftest import REPO

BARE = ("pyspark", "mlflow", "deltalake", "duckdb", "airflow", "pyod", "py4j", "pytest")
RUN = f"""
import json, runpy, sys
class Bare:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BARE!r}:
            raise ImportError("not on a bare GPU image: " + name)
sys.meta_path.insert(0, Bare())
sys.argv = ["gpu_check", sys.argv[1], "--quick", "--device", "cpu"]
runpy.run_module("lstmad.benchmarks.gpu_check", run_name="__main__")
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {BARE!r})))
"""


def test_the_gpu_check_runs_on_a_bare_image_and_measures_every_profile(tmp_path):
    done = subprocess.run([sys.executable, "-c", RUN, str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []  # none of them was imported
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    # 8 assets × 2 days of 144 ten-minute rows, windows of 26 rows: 8 × (288 − 26 + 1)
    assert result["windows"] == 8 * (2 * 144 - 26 + 1) == 2104
    assert result["device"]["name"] == "cpu" and result["cuda_tests"] == {"ran": False, "why": "no CUDA device"}
    assert set(result["profiles"]) == {"lstm_forecaster", "lstm_autoencoder", "iae_lstm_kl_small"}
    for profile, entry in result["profiles"].items():
        measured = [s for s in entry["scoring"] if s["measured"]]
        assert [(s["precision"], s["compile"], s["batch_size"]) for s in measured] == [("fp32", False, 256),
                                                                                        ("fp32", False, 1024)]
        assert all(s["windows"] == 2104 and s["windows_per_s"] > 0 for s in measured)
        assert measured[0]["max_relative_difference"] == 0.0 and measured[1]["max_relative_difference"] < 1e-4
        assert {s["why"] for s in entry["scoring"] if not s["measured"]} == {"CUDA only"} and len(entry["scoring"]) == 8
        assert entry["best_scoring_windows_per_s"] == max(s["windows_per_s"] for s in measured)
        (training,) = entry["training"]
        assert training["precision"] == "fp32" and training["windows"] > 0 and training["windows_per_s"] > 0
    # the forecaster (LSTM 4→64→64 over the first 25 rows, a 64→4 head): 2·4H(I+H) + 2·4H per step and layer
    per_step = (2 * 4 * 64 * (4 + 64) + 2 * 4 * 64) + (2 * 4 * 64 * (64 + 64) + 2 * 4 * 64)
    assert result["profiles"]["lstm_forecaster"]["flops_per_window"] == per_step * 25 + 2 * 64 * 4


def test_a_failing_measurement_is_recorded_and_the_check_goes_on(tmp_path, monkeypatch):
    from lstmad.benchmarks import gpu_check

    real = gpu_check.score_rate

    def failing_at_256(detector, windows, batch_size, *args):
        if batch_size == 256:
            raise RuntimeError("CUDA error: out of memory (planted)")
        return real(detector, windows, batch_size, *args)

    monkeypatch.setattr(gpu_check, "score_rate", failing_at_256)
    result = gpu_check.run(tmp_path, quick=True, device="cpu")
    for entry in result["profiles"].values():
        failed, measured = entry["scoring"][0], entry["scoring"][1]
        assert (failed["batch_size"], failed["measured"]) == (256, False) and "planted" in failed["error"]
        # the next setting is measured and, as the first fp32 uncompiled one, is the reference
        assert (measured["batch_size"], measured["measured"], measured["max_relative_difference"]) == (1024, True, 0.0)
        assert entry["training"][0]["windows_per_s"] > 0
