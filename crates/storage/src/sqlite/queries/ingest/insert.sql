-- ?1 provider, ?2 kind, ?3 file_id, ?4 dmp_id, ?5 file_date, ?6 name, ?7 source, ?8 spool_path,
-- ?9 bytes, ?10 status, ?11 reason_code, ?12 reason, ?13 duplicate_of, ?14 received_at.
-- Final states (rejected, duplicate) are finished on arrival.
INSERT INTO ingest_files (
    provider_id, kind, file_id, dmp_id, file_date, name, source, spool_path, bytes, status,
    reason_code, reason, duplicate_of, received_at, finished_at
)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14,
    CASE WHEN ?10 IN ('rejected', 'duplicate') THEN ?14 END)
RETURNING id, provider_id, kind, file_id, dmp_id, file_date, name, source, spool_path, bytes, status,
    reason_code, reason, duplicate_of, received_at, apply_at, started_at, finished_at, lines_read,
    lines_applied, lines_rejected, blank_lines, memberships_added, memberships_removed,
    segments_upserted, rejects, unknown_segments, check_millis, duration_millis
