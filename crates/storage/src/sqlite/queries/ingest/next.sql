-- A delivery left applying first (a crash interrupted it); otherwise, of the provider whose
-- queued delivery has waited longest, the queued delivery with the earliest DATE (then FILE ID,
-- taxonomy before data).
SELECT id, provider_id, kind, file_id, dmp_id, file_date, name, source, spool_path, bytes, status,
    reason_code, reason, duplicate_of, received_at, apply_at, started_at, finished_at, lines_read,
    lines_applied, lines_rejected, blank_lines, memberships_added, memberships_removed,
    segments_upserted, rejects, unknown_segments, check_millis, duration_millis
FROM ingest_files
WHERE status = 'applying'
    OR (status = 'queued' AND provider_id = (
        SELECT provider_id FROM ingest_files WHERE status = 'queued' ORDER BY id LIMIT 1))
ORDER BY status = 'applying' DESC, file_date, file_id, kind = 'data', id
LIMIT 1
