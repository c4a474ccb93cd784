"""Benchmarks on published protocols (`lstmad benchmark NAME`): skab, icing, contamination."""
