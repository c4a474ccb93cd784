"""The tensor-block table on disk: its files per date, reading blocks and streaming their windows, content
versions, and the normalisation statistics files beside them."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional, Sequence

import pyarrow as pa
import pyarrow.dataset as ds
import torch

from lstmad import names
from lstmad.transforms.blocks import Windows, windows_from_blocks


def block_files(root: str | Path, dates: Sequence[str]) -> list[str]:
    """The Parquet files of the given dates of a tensor-block table, in date order."""
    return [str(f) for day in dates for f in sorted((Path(root) / f"{names.DATE}={day}").glob("*.parquet"))]


def stream_window_batches(path: str | Path, dates: Sequence[str], window: int, batch_size: int,
                          max_masked_share: float = 1.0, blocks_per_read: int = 32
                          ) -> Iterator[tuple[torch.Tensor, Windows, slice]]:
    """Stream the windows of a tensor-block table without holding it: read ``blocks_per_read`` blocks at a
    time (pyarrow record batches), yield (batch (B, W, C) float32, the Windows it came from, its slice).

    Memory stays at one read of blocks plus one batch, however large the archive; the order is the
    dataset's, not sorted. Every batch is written into the same buffer (a fresh tensor per batch lets glibc
    fragment its heap, and resident memory then grows with the archive): it is valid until the next one
    is yielded; ``clone()`` what must outlive that.
    """
    buffer: Optional[torch.Tensor] = None
    import pyarrow.parquet as pq

    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no tensor blocks yet; run prepare first")
    # One file at a time, opened and closed here: a pyarrow dataset keeps every file's footer once read, and
    # its scanner decodes files ahead of the consumer, so either grows with the archive.
    for file in block_files(root, dates):
        with pq.ParquetFile(file) as handle:
            for record_batch in handle.iter_batches(batch_size=blocks_per_read, use_threads=False):
                if record_batch.num_rows == 0:
                    continue
                windows = windows_from_blocks(pa.Table.from_batches([record_batch]), window,
                                              max_masked_share=max_masked_share)
                if buffer is None or buffer.shape[1] != windows.n_channels:
                    buffer = torch.empty((batch_size, windows.n_channels, window), dtype=torch.float32)
                for lo in range(0, len(windows), batch_size):
                    part = slice(lo, min(lo + batch_size, len(windows)))
                    yield windows.batch(part, out=buffer), windows, part


def read_blocks(path: str | Path, dates: Sequence[str], columns: Optional[list[str]] = None) -> pa.Table:
    """Blocks of the given dates (``YYYY-MM-DD``) from a tensor-block table, in a stable order; ``columns``
    limits what is read (the sort keys are always included)."""
    dataset = _block_dataset(Path(path))
    keys = [names.DATE, names.ASSET, names.BLOCK_START]
    wanted = None if columns is None else list(dict.fromkeys([*columns, *keys]))
    table = dataset.to_table(columns=wanted, filter=ds.field(names.DATE).isin(list(dates)))
    return table.sort_by([(names.DATE, "ascending"), (names.ASSET, "ascending"), (names.BLOCK_START, "ascending")])


def iter_blocks(path: str | Path, dates: Sequence[str], columns: list[str], batch_size: int = 64):
    """Record batches of at most ``batch_size`` blocks of the given dates, in file order (no sort): for a pass
    over a night whose memory is one batch, not the night."""
    dataset = _block_dataset(Path(path))
    yield from dataset.scanner(columns=columns, filter=ds.field(names.DATE).isin(list(dates)),
                               batch_size=batch_size, batch_readahead=0, fragment_readahead=0).to_batches()


def _block_dataset(path: Path) -> ds.Dataset:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no tensor blocks yet; run prepare first")
    return ds.dataset(path, format="parquet", partitioning=ds.partitioning(
        pa.schema([(names.DATE, pa.string())]), flavor="hive"))


CONTENT_VERSION_FILE = "_content_version.json"


def content_version(root: str | Path, day: str) -> str:
    """The source data version of one date of a tensor-block table: "sha256:<hex>", the SHA-256 of the sorted
    SHA-256 digests (hex, one per line) of its blocks (block_digest), so the same blocks give the same version
    however they are spread over files, ordered in them or encoded. Cached beside the files (keyed by their
    names and sizes, so a re-prepared date is hashed afresh); results carry it as their lineage."""
    import hashlib
    import json
    import os

    folder = Path(root) / f"{names.DATE}={day}"
    files = sorted(folder.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{folder}: no tensor blocks for {day}")
    listing = {f.name: f.stat().st_size for f in files}
    cache = folder / CONTENT_VERSION_FILE
    try:
        cached = json.loads(cache.read_text())
        if cached.get("files") == listing:
            return cached["version"]
    except (OSError, ValueError):
        pass
    import pyarrow.parquet as pq

    digests = []
    for file in files:
        with pq.ParquetFile(file) as handle:
            for batch in handle.iter_batches(batch_size=64):
                digests += block_digests(batch)
    version = "sha256:" + hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()
    try:  # a read-only archive still gets its version, just not cached
        staged = cache.with_name(f".{cache.name}.{os.getpid()}")
        staged.write_text(json.dumps({"files": listing, "version": version}))
        staged.replace(cache)
    except OSError:
        pass
    return version


def block_digests(blocks) -> list[str]:
    """The SHA-256 (hex) of each block of a table or record batch: every column in name order, each value
    length-prefixed (binary as its bytes, null as a marker, anything else as its text)."""
    import hashlib

    columns = sorted(blocks.schema.names)
    values = [blocks.column(blocks.schema.get_field_index(name)).to_pylist() for name in columns]
    out = []
    for row in zip(*values):
        digest = hashlib.sha256()
        for value in row:
            data = b"\x00null" if value is None else value if isinstance(value, bytes) else str(value).encode()
            digest.update(len(data).to_bytes(8, "little") + data)
        out.append(digest.hexdigest())
    return out


# ------------------------------------------------------------------------------ writing a prepared date


def replace_block_files(tensors: Path, dates: list[str], staging: Path, written: list[tuple[str, str]]) -> None:
    """Move the files a prepare run wrote from ``staging`` into the folders of ``dates``, which then hold only
    them: earlier runs' files go, and a date left without usable rows loses its old blocks. Other dates are
    untouched. The tasks wrote to staging, so a run that fails never leaves its files beside the old ones."""
    import shutil
    import time

    keep: dict[str, set[str]] = {}
    for day, name in written:
        keep.setdefault(day, set()).add(name)
    for day in dates:
        folder = tensors / f"{names.DATE}={day}"
        if keep.get(day):
            folder.mkdir(parents=True, exist_ok=True)
            for name in keep[day]:
                (staging / f"{names.DATE}={day}" / name).replace(folder / name)
        if folder.is_dir():
            for file in folder.iterdir():
                if file.name not in keep.get(day, set()):
                    file.unlink()
            if not keep.get(day):
                folder.rmdir()
            else:
                content_version(tensors, day)  # hash now, while the files are fresh in the page cache
    shutil.rmtree(staging, ignore_errors=True)
    # staging folders of runs that failed a day or more ago (a younger one may belong to a run in progress)
    for leftover in (tensors / "_staging").glob("*"):
        if time.time() - leftover.stat().st_mtime > 86_400:
            shutil.rmtree(leftover, ignore_errors=True)


# ------------------------------------------------------------------------------ normalisation statistics


def stats_dir(tensors: Path) -> Path:
    """The folder of the table's normalisation statistics: one JSON per stats_id, plus current.json."""
    return tensors / names.STATS_DIR


def load_stats(tensors: Path, stats_id: str = "current"):
    """The NormalisationStats of ``stats_id`` ("current": the pipeline's reference)."""
    import json

    from lstmad.layout import PrepareError
    from lstmad.transforms.series import NormalisationStats

    file = stats_dir(tensors) / f"{stats_id}.json"
    if not file.exists():
        raise PrepareError(f"{file}: no normalisation statistics yet; prepare the training range first "
                           f"(lstmad prepare --fit-stats, or lstmad train)")
    return NormalisationStats.from_dict(json.loads(file.read_text()))


def save_stats(tensors: Path, stats, make_current: bool) -> None:
    """Keep every statistics version by id (blocks and models refer to it); ``current`` is the reference."""
    import json

    folder = stats_dir(tensors)
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(stats.to_dict(), indent=2)
    if not (folder / f"{stats.stats_id}.json").exists():  # content-addressed: never rewritten
        (folder / f"{stats.stats_id}.json").write_text(text)
    if make_current:
        tmp = folder / ".current.json.tmp"
        tmp.write_text(text)
        tmp.replace(folder / "current.json")
