-- The write path of in-app delivery, made cheaper (issues 9 and 10; BENCHMARKS.md, "Events and
-- rules"). `process_event` stores, per event, a notification, its recipients, one delivery
-- attempt and one feed entry per recipient; profiled at 1,000 events/s, a fifth of Postgres's
-- CPU went to triggers: a foreign-key check per attempt row and per feed entry (each an SPI
-- query taking a row lock on the parent), and the unread counter's trigger, which planned a
-- dynamic query at every call and then upserted one counter per statement in a loop.

-- 1. The unread counter, set-based and planned once: one static statement per operation, one
-- upsert for every user the statement touched, in (project, user) order so that two statements
-- touching several users cannot deadlock on the counters (INSERT … SELECT … ORDER BY takes the
-- rows' locks in that order). A counter only ever goes down for a user whose rows were
-- delivered, whose counter row was therefore created with them; should one be missing, a
-- negative change creates it at zero.
CREATE FUNCTION inbox_unread_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO inbox_users AS i (project_id, user_id, unread)
    SELECT d.project_id, d.user_id, d.delta
    FROM (SELECT project_id, user_id, count(*) AS delta FROM new_rows
          WHERE delivered_at IS NOT NULL AND read_at IS NULL AND deleted_at IS NULL
          GROUP BY project_id, user_id) d
    WHERE EXISTS (SELECT 1 FROM users u WHERE u.project_id = d.project_id AND u.user_id = d.user_id)
    ORDER BY d.project_id, d.user_id
    ON CONFLICT (project_id, user_id) DO UPDATE SET unread = i.unread + excluded.unread;
    RETURN NULL;
END
$$;

CREATE FUNCTION inbox_unread_after_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO inbox_users AS i (project_id, user_id, unread)
    SELECT d.project_id, d.user_id,
           CASE WHEN d.delta > 0 OR EXISTS (
                    SELECT 1 FROM inbox_users x
                    WHERE x.project_id = d.project_id AND x.user_id = d.user_id)
                THEN d.delta ELSE 0 END
    FROM (SELECT project_id, user_id, sum(c) AS delta FROM (
              SELECT project_id, user_id, 1 AS c FROM new_rows
              WHERE delivered_at IS NOT NULL AND read_at IS NULL AND deleted_at IS NULL
              UNION ALL
              SELECT project_id, user_id, -1 FROM old_rows
              WHERE delivered_at IS NOT NULL AND read_at IS NULL AND deleted_at IS NULL) c
          GROUP BY project_id, user_id HAVING sum(c) <> 0) d
    WHERE EXISTS (SELECT 1 FROM users u WHERE u.project_id = d.project_id AND u.user_id = d.user_id)
    ORDER BY d.project_id, d.user_id
    ON CONFLICT (project_id, user_id)
        DO UPDATE SET unread = greatest(i.unread + excluded.unread, 0);
    RETURN NULL;
END
$$;

CREATE FUNCTION inbox_unread_after_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- only existing counters go down (and never below zero)
    INSERT INTO inbox_users AS i (project_id, user_id, unread)
    SELECT d.project_id, d.user_id, -d.delta
    FROM (SELECT project_id, user_id, count(*) AS delta FROM old_rows
          WHERE delivered_at IS NOT NULL AND read_at IS NULL AND deleted_at IS NULL
          GROUP BY project_id, user_id) d
    JOIN inbox_users x ON x.project_id = d.project_id AND x.user_id = d.user_id
    ORDER BY d.project_id, d.user_id
    ON CONFLICT (project_id, user_id)
        DO UPDATE SET unread = greatest(i.unread + excluded.unread, 0);
    RETURN NULL;
END
$$;

DROP TRIGGER notification_recipients_unread_insert ON notification_recipients;
DROP TRIGGER notification_recipients_unread_update ON notification_recipients;
DROP TRIGGER notification_recipients_unread_delete ON notification_recipients;
DROP FUNCTION inbox_unread_delta();

CREATE TRIGGER notification_recipients_unread_insert
    AFTER INSERT ON notification_recipients REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION inbox_unread_after_insert();
CREATE TRIGGER notification_recipients_unread_update
    AFTER UPDATE ON notification_recipients
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION inbox_unread_after_update();
CREATE TRIGGER notification_recipients_unread_delete
    AFTER DELETE ON notification_recipients REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION inbox_unread_after_delete();

-- 2. Two logs whose rows are only ever written beside their parent lose the per-row foreign-key
-- check and keep the cascade, as one statement-level trigger on the parent's deletes (the
-- "loose foreign key" of high-volume tables). A delivery attempt is inserted in the statement
-- or transaction that reads its notification; a feed entry in the statement that updates (and
-- so locks) its user's `inbox_users` row. What is given up: a row inserted by a transaction
-- still open while its parent is deleted by another outlives the parent (a notification older
-- than the retention period being delivered at the moment it is deleted); neither log is read
-- without its parent.
ALTER TABLE delivery_attempts DROP CONSTRAINT delivery_attempts_project_id_notification_id_fkey;
ALTER TABLE inbox_feed DROP CONSTRAINT inbox_feed_project_id_user_id_fkey;

CREATE FUNCTION notifications_delete_attempts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM delivery_attempts a USING old_rows o
    WHERE a.project_id = o.project_id AND a.notification_id = o.notification_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER notifications_delete_attempts
    AFTER DELETE ON notifications REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notifications_delete_attempts();

CREATE FUNCTION inbox_users_delete_feed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM inbox_feed f USING old_rows o
    WHERE f.project_id = o.project_id AND f.user_id = o.user_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER inbox_users_delete_feed
    AFTER DELETE ON inbox_users REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION inbox_users_delete_feed();
