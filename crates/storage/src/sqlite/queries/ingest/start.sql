-- Delivery ?1 starts (or restarts) applying. A redo keeps its apply_at; counts start at zero.
UPDATE ingest_files
SET status = 'applying', apply_at = COALESCE(apply_at, ?2), started_at = ?3,
    lines_read = 0, lines_applied = 0, lines_rejected = 0, blank_lines = 0,
    memberships_added = 0, memberships_removed = 0, segments_upserted = 0, rejects = '',
    unknown_segments = '', check_millis = 0, duration_millis = 0
WHERE id = ?1 AND status IN ('queued', 'applying')
RETURNING id, provider_id, kind, file_id, dmp_id, file_date, name, source, spool_path, bytes, status,
    reason_code, reason, duplicate_of, received_at, apply_at, started_at, finished_at, lines_read,
    lines_applied, lines_rejected, blank_lines, memberships_added, memberships_removed,
    segments_upserted, rejects, unknown_segments, check_millis, duration_millis
