-- Delivery ?1 ends with status ?2 (applied or rejected), reason ?3/?4 and its counts.
UPDATE ingest_files
SET status = ?2, reason_code = ?3, reason = ?4, finished_at = ?5, spool_path = NULL,
    lines_read = ?6, lines_applied = ?7, lines_rejected = ?8, blank_lines = ?9,
    memberships_added = ?10, memberships_removed = ?11, segments_upserted = ?12, rejects = ?13,
    unknown_segments = ?14, check_millis = ?15, duration_millis = ?16
WHERE id = ?1 AND status IN ('queued', 'applying')
RETURNING id, provider_id, kind, file_id, dmp_id, file_date, name, source, spool_path, bytes, status,
    reason_code, reason, duplicate_of, received_at, apply_at, started_at, finished_at, lines_read,
    lines_applied, lines_rejected, blank_lines, memberships_added, memberships_removed,
    segments_upserted, rejects, unknown_segments, check_millis, duration_millis
