SELECT id, provider_id, kind, file_id, dmp_id, file_date, name, source, spool_path, bytes, status,
    reason_code, reason, duplicate_of, received_at, apply_at, started_at, finished_at, lines_read,
    lines_applied, lines_rejected, blank_lines, memberships_added, memberships_removed,
    segments_upserted, rejects, unknown_segments, check_millis, duration_millis
FROM ingest_files
WHERE provider_id = ?1 AND file_id = ?2
ORDER BY id
