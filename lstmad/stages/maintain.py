"""Stage maintain: weekly upkeep of the Delta tables (compaction, then vacuum beyond the retention)."""

from __future__ import annotations

import logging
from typing import Optional

from lstmad.config import PipelineConfig
from lstmad.io import lakehouse
from lstmad.layout import Paths

log = logging.getLogger("lstmad")


def maintain(config: PipelineConfig, retention_hours: Optional[int] = None) -> dict:
    """Weekly upkeep of the Delta tables: compaction, then vacuum beyond ``retention_hours`` (default
    delta.retention_hours)."""
    hours = config.delta.retention_hours if retention_hours is None else retention_hours
    if hours < 0:
        raise ValueError(f"retention hours must be 0 or more, got {hours}")
    tables = lakehouse.maintain(Paths.of(config).lake, hours)
    log.info("maintain: %s", ", ".join(f"{t['table']} {t['files_before']}→{t['files_after']} files" for t in tables))
    return {"retention_hours": hours, "tables": tables}
