"""lstmad: LSTM anomaly detection for sensor archives, on Spark."""

__version__ = "0.1.0"
