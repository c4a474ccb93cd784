"""Progress of long steps: rate and ETA of a hand-worked example, and the periodic lines a training writes
to its log (what an Airflow task log shows during a long training)."""

import logging
import re

import numpy as np

from lstmad import progress
from lstmad.detectors.lstm_forecaster import LSTMForecasterDetector
from lstmad.transforms.blocks import Windows


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_rate_and_eta_of_a_hand_worked_example(monkeypatch, caplog):
    clock = Clock()
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    monkeypatch.setenv("LSTMAD_PROGRESS_S", "10")
    caplog.set_level(logging.INFO, logger="lstmad.progress")
    step = progress.Progress("train epoch 1/3", total=1000)
    clock.now += 4
    step.advance(100)  # 4 s after the start: not yet a line (every 10 s)
    clock.now += 6
    step.advance(150)  # 250 windows in 10 s: 25 windows/s, 750 to go: 30 s
    assert [r.getMessage() for r in caplog.records] == [
        "train epoch 1/3: 250/1,000 windows (25 %), 25 windows/s, ETA 0:30, 0:10 elapsed"]
    clock.now += 30
    step.advance(750)
    step.finish("loss 0.5")
    assert caplog.records[-1].getMessage() == "train epoch 1/3: 1,000/1,000 windows (100 %), 25 windows/s, 0:40 elapsed; loss 0.5"


def test_a_training_writes_a_line_per_epoch_with_its_windows_and_losses(monkeypatch, caplog):
    monkeypatch.setenv("LSTMAD_PROGRESS_S", "0")  # every batch
    caplog.set_level(logging.INFO, logger="lstmad.progress")
    t = np.arange(612)
    series = np.stack([np.sin(t / 7), np.cos(t / 5)], 1)
    data = Windows.from_array(np.lib.stride_tricks.sliding_window_view(series, 12, axis=0).transpose(0, 2, 1))
    detector = LSTMForecasterDetector(hidden_sizes=(8,), epochs=3, batch_size=64, patience=10, seed=3, device="cpu",
                                      validation_share=0.2)
    detector.fit(data)
    lines = [r.getMessage() for r in caplog.records if r.name == "lstmad.progress"]
    done = [line for line in lines if "validation loss" in line]  # each epoch's closing line
    trained = detector.history_[0]["windows"]
    assert len(done) == 3 and trained == len(data) - round(0.2 * len(data))
    for epoch, (line, record) in enumerate(zip(done, detector.history_), start=1):
        assert line.startswith(f"train epoch {epoch}/3: {trained:,}/{trained:,} windows (100 %), ")
        assert re.search(r"[\d,]+ windows/s", line)
        assert f"validation loss {record['val_loss']:.4g}" in line
    # with a line every batch: one per batch besides the closing line
    assert len(lines) - len(done) == 3 * int(np.ceil(trained / 64))


def test_a_short_step_closes_quietly_when_asked_a_long_one_says_its_count(monkeypatch, caplog):
    clock = Clock()
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    monkeypatch.setenv("LSTMAD_PROGRESS_S", "10")
    caplog.set_level(logging.INFO, logger="lstmad.progress")
    short = progress.Progress("score task", unit="timestamps")
    clock.now += 3
    short.advance(600)
    short.finish(only_if_long=True)  # 3 s: one of many Spark tasks, no line
    assert caplog.records == []
    long = progress.Progress("score task", unit="timestamps")
    clock.now += 12
    long.advance(2400)  # a line at 12 s: 200 timestamps/s
    clock.now += 8
    long.advance(1600)
    long.finish(only_if_long=True)
    assert [r.getMessage() for r in caplog.records] == [
        "score task: 2,400 timestamps, 200 timestamps/s, 0:12 elapsed",
        "score task: 4,000 timestamps, 200 timestamps/s, 0:20 elapsed"]
