-- `process_event`'s batch statement keeps the unread counter itself (issue 10; BENCHMARKS.md,
-- "Notifications"): it inserts a batch's recipients and then updates each delivered user's
-- `inbox_users` row once, unread count and feed sequence together. The insert trigger's own
-- count would update every such row a second time (two row versions per recipient and a
-- statement per batch: 1.0 of Postgres's 9.5 s at 500 events/s). A transaction that keeps the
-- counter itself says so with `SET LOCAL comet.recipients_counted = on`; every other insert of
-- recipient rows is counted here as before. The update and delete triggers are unchanged.
CREATE OR REPLACE FUNCTION inbox_unread_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('comet.recipients_counted', true) = 'on' THEN
        RETURN NULL;
    END IF;
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
