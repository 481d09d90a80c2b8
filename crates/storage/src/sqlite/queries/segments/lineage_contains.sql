-- Whether segment ?3 is segment ?2 or one of its ancestors in folder ?1, following parent
-- links upwards from ?2. UNION (not UNION ALL) stops on a loop instead of running forever.
WITH RECURSIVE lineage (key) AS (
    SELECT ?2
    UNION
    SELECT segments.parent_key
    FROM segments
    JOIN lineage ON segments.folder_id = ?1 AND segments.key = lineage.key
    WHERE segments.parent_key IS NOT NULL
)
SELECT EXISTS (SELECT 1 FROM lineage WHERE key = ?3)
