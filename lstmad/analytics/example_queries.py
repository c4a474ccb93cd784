"""The analysts' example queries over the result tables: the README shows them with their output on the demo
data, the demo prints them, `lstmad bench queries` times them on a year of results for 100 assets.

Each is (what it answers, SQL with {named} parameters); `render` fills the parameters in.
"""

from __future__ import annotations

EXAMPLES: dict[str, tuple[str, str]] = {
    "anomaly_hours_last_7_days": (
        "Anomaly hours per asset over the last 7 days of results (for a live schedule, use now() for the end)",
        """WITH window_start AS (SELECT max("end") - INTERVAL 7 DAY AS since FROM anomaly_intervals)
SELECT asset_id, count(*) AS intervals,
       round(sum(duration_s - greatest(0, epoch(since) - epoch(start))) / 3600.0, 2) AS anomaly_hours
FROM anomaly_intervals, window_start
WHERE "end" >= since
GROUP BY asset_id ORDER BY anomaly_hours DESC""",
    ),
    "longest_intervals_with_top_channels": (
        "The ten longest intervals and the three channels that contribute most to each",
        """SELECT asset_id, start, round(duration_s / 3600.0, 1) AS hours, round(severity, 2) AS severity,
       list_transform(channel_shares[1:3],
                      lambda p: p.channel || ' ' || round(100 * p.share)::INT || '%') AS top_channels
FROM anomaly_intervals
ORDER BY duration_s DESC, asset_id LIMIT 10""",
    ),
    "intervals_overlapping_a_range": (
        "Intervals that overlap a time range (an interval covers start .. end + one step)",
        """SELECT asset_id, start, "end", round(severity, 2) AS severity, top_channel, model_version, interval_id
FROM anomaly_intervals
WHERE start < TIMESTAMPTZ '{range_end}' AND "end" >= TIMESTAMPTZ '{range_start}'
ORDER BY start, asset_id""",
    ),
    "mean_time_between_anomalies": (
        "Mean time between anomalies per asset: from the end of one interval to the start of the next",
        """SELECT asset_id, count(*) AS intervals, round(avg(hours_since_previous), 1) AS mean_hours_between
FROM (SELECT asset_id,
             epoch(start - lag("end") OVER (PARTITION BY asset_id ORDER BY start)) / 3600.0 AS hours_since_previous
      FROM anomaly_intervals)
GROUP BY asset_id ORDER BY asset_id""",
    ),
    "changes_between_model_versions": (
        "How the results changed when a new model re-scored nights: the same timestamps in the table now and "
        "in its version {old_table_version} (before the re-score)",
        """SELECT now_.asset_id, was.model_version AS old_model, now_.model_version AS new_model,
       count(*) AS timestamps, sum(was.flag::INT) AS old_flags, sum(now_.flag::INT) AS new_flags,
       sum((was.flag AND now_.flag)::INT) AS flagged_by_both,
       round(corr(was.score, now_.score), 3) AS score_correlation
FROM anomaly_scores AS now_
JOIN "anomaly_scores@{old_table_version}" AS was USING (asset_id, timestamp)
WHERE now_.scored_date >= '{since}' AND was.scored_date >= '{since}' AND now_.model_version <> was.model_version
GROUP BY ALL ORDER BY now_.asset_id""",
    ),
}


def render(name: str, **parameters) -> str:
    """The SQL of example ``name`` with its {parameters} filled in."""
    return EXAMPLES[name][1].format(**parameters)


def describe(name: str, **parameters) -> str:
    return EXAMPLES[name][0].format(**parameters)
