-- How many users hold each role, kept by triggers on `user_roles`, so that `GET /api/v1/roles`
-- reads a few rows per role instead of counting the holders of every role per request (10 ms
-- per request with 10,000 users: BENCHMARKS.md, "User management").
--
-- As `user_counts` does for statuses: each transaction adds its net change to one of 16 shard
-- rows per role (picked by its transaction id), so concurrent invitations to the same role do
-- not queue on one row lock; a role's count is the sum of its shards.

CREATE TABLE role_user_counts (
    project_id uuid NOT NULL,
    role_id uuid NOT NULL,
    shard smallint NOT NULL CHECK (shard BETWEEN 0 AND 15),
    users bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, role_id, shard),
    FOREIGN KEY (project_id, role_id) REFERENCES roles (project_id, role_id) ON DELETE CASCADE
);

-- Adds one statement's net change (project, role, delta triples) to this transaction's shard.
-- Roles deleted by the same statement (a cascade from the role or its project) are skipped.
CREATE FUNCTION role_user_counts_apply(projects uuid[], roles uuid[], deltas bigint[])
RETURNS void LANGUAGE sql AS $$
    INSERT INTO role_user_counts AS c (project_id, role_id, shard, users)
    SELECT d.project_id, d.role_id, (txid_current() % 16)::smallint, d.users
    FROM (
        SELECT p AS project_id, r AS role_id, sum(n) AS users
        FROM unnest(projects, roles, deltas) AS x (p, r, n)
        GROUP BY p, r
    ) d
    WHERE d.users <> 0
      AND EXISTS (SELECT 1 FROM roles ro
                  WHERE ro.project_id = d.project_id AND ro.role_id = d.role_id)
    ORDER BY d.project_id, d.role_id
    ON CONFLICT (project_id, role_id, shard) DO UPDATE SET users = c.users + excluded.users;
$$;

CREATE FUNCTION role_user_counts_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM role_user_counts_apply(array_agg(project_id), array_agg(role_id),
                                   array_agg(1::bigint))
    FROM new_rows;
    RETURN NULL;
END $$;

CREATE FUNCTION role_user_counts_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM role_user_counts_apply(array_agg(project_id), array_agg(role_id),
                                   array_agg(-1::bigint))
    FROM old_rows;
    RETURN NULL;
END $$;

CREATE FUNCTION role_user_counts_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM role_user_counts_apply(array_agg(project_id), array_agg(role_id), array_agg(n))
    FROM (SELECT project_id, role_id, -1::bigint AS n FROM old_rows
          UNION ALL
          SELECT project_id, role_id, 1 FROM new_rows) x;
    RETURN NULL;
END $$;

CREATE TRIGGER user_roles_count_insert AFTER INSERT ON user_roles
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION role_user_counts_insert();
CREATE TRIGGER user_roles_count_delete AFTER DELETE ON user_roles
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT
    EXECUTE FUNCTION role_user_counts_delete();
CREATE TRIGGER user_roles_count_update AFTER UPDATE ON user_roles
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION role_user_counts_update();

-- `TRUNCATE user_roles` bypasses the row triggers; it empties every role.
CREATE FUNCTION role_user_counts_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM role_user_counts;
    RETURN NULL;
END $$;
CREATE TRIGGER user_roles_count_truncate AFTER TRUNCATE ON user_roles
    FOR EACH STATEMENT EXECUTE FUNCTION role_user_counts_truncate();

-- The holders that exist already (the triggers above hold the table's lock until this commits).
LOCK TABLE user_roles IN SHARE MODE;
INSERT INTO role_user_counts (project_id, role_id, shard, users)
SELECT project_id, role_id, 0, count(*) FROM user_roles GROUP BY project_id, role_id;
