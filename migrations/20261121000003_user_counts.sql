-- Per-project user counts by status, kept exact by triggers on `users`, so that the user list's
-- totals (`meta.pagination.total` without a role or search filter, `meta.totalActive`) are a
-- read of at most 16 rows instead of a count over every user of the project.
--
-- A project's counts are spread over 16 shard rows, chosen per transaction
-- (`txid_current() % 16`): concurrent invitations in one project then rarely wait on the same
-- counter row, and one transaction only ever locks one counter row per project. (Two
-- transactions that each change several users in separate statements can still deadlock when
-- they share a shard, 1 time in 16, as on any row both touch; Postgres aborts one of them.
-- Changing many users in one statement avoids it.) A shard's columns may be negative; only
-- their sums mean anything. The triggers are statement-level with transition tables: a bulk insert of N users is
-- one counter update, and an update that changes no status (activity, names, passwords) writes
-- nothing.

CREATE TABLE user_counts (
    project_id uuid NOT NULL REFERENCES projects (project_id) ON DELETE CASCADE,
    shard smallint NOT NULL CHECK (shard BETWEEN 0 AND 15),
    invited bigint NOT NULL DEFAULT 0,
    active bigint NOT NULL DEFAULT 0,
    deactivated bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, shard)
);

-- Adds one statement's net change (project, status, delta triples) to this transaction's
-- shard. Projects deleted by the same statement (a cascade) are skipped.
CREATE FUNCTION user_counts_apply(projects uuid[], statuses text[], deltas bigint[])
RETURNS void LANGUAGE sql AS $$
    INSERT INTO user_counts AS c (project_id, shard, invited, active, deactivated)
    SELECT d.project_id, (txid_current() % 16)::smallint, d.invited, d.active, d.deactivated
    FROM (
        SELECT p AS project_id,
               coalesce(sum(n) FILTER (WHERE s = 'INVITED'), 0) AS invited,
               coalesce(sum(n) FILTER (WHERE s = 'ACTIVE'), 0) AS active,
               coalesce(sum(n) FILTER (WHERE s = 'DEACTIVATED'), 0) AS deactivated
        FROM unnest(projects, statuses, deltas) AS x (p, s, n)
        GROUP BY p
    ) d
    WHERE (d.invited, d.active, d.deactivated) <> (0, 0, 0)
      AND EXISTS (SELECT 1 FROM projects p WHERE p.project_id = d.project_id)
    ORDER BY d.project_id
    ON CONFLICT (project_id, shard) DO UPDATE
        SET invited = c.invited + excluded.invited,
            active = c.active + excluded.active,
            deactivated = c.deactivated + excluded.deactivated;
$$;

CREATE FUNCTION user_counts_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM user_counts_apply(array_agg(project_id), array_agg(status), array_agg(1::bigint))
    FROM new_rows;
    RETURN NULL;
END $$;

CREATE FUNCTION user_counts_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM user_counts_apply(array_agg(project_id), array_agg(status), array_agg(-1::bigint))
    FROM old_rows;
    RETURN NULL;
END $$;

CREATE FUNCTION user_counts_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Most updates change no status (activity, names, passwords): nothing to write then.
    IF NOT EXISTS (SELECT 1 FROM old_rows o JOIN new_rows n USING (user_id)
                   WHERE o.status <> n.status OR o.project_id <> n.project_id) THEN
        RETURN NULL;
    END IF;
    PERFORM user_counts_apply(array_agg(project_id), array_agg(status), array_agg(n))
    FROM (SELECT project_id, status, -1::bigint AS n FROM old_rows
          UNION ALL
          SELECT project_id, status, 1 FROM new_rows) x;
    RETURN NULL;
END $$;

CREATE TRIGGER users_count_insert AFTER INSERT ON users
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION user_counts_insert();
CREATE TRIGGER users_count_delete AFTER DELETE ON users
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION user_counts_delete();
CREATE TRIGGER users_count_update AFTER UPDATE ON users
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION user_counts_update();

-- `TRUNCATE users` bypasses the row triggers; it empties every project, so it empties the counts.
CREATE FUNCTION user_counts_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM user_counts;
    RETURN NULL;
END $$;
CREATE TRIGGER users_count_truncate AFTER TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION user_counts_truncate();

-- The users that exist already (the triggers above hold the table's lock until this commits).
INSERT INTO user_counts (project_id, shard, invited, active, deactivated)
SELECT project_id, 0,
       count(*) FILTER (WHERE status = 'INVITED'),
       count(*) FILTER (WHERE status = 'ACTIVE'),
       count(*) FILTER (WHERE status = 'DEACTIVATED')
FROM users GROUP BY project_id;
