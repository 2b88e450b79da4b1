-- `process_event`'s batch statement writes less per recipient (issue 10; BENCHMARKS.md,
-- "Notifications"): at 1,000 events/s of 10 recipients each it wrote 10 recipient rows, 10
-- delivery attempts and 10 feed entries per event, and checked the recipients' foreign key
-- row by row (240,000 checks for 24,000 events).
--
-- 1. A rule's in-app delivery is recorded once, on the notification: the `process_event` job
-- and attempt that stored it and delivered it in the same transaction. Its per-recipient
-- attempts (`ok`, or `skipped` for a recipient whose in-app channel is off) are read from the
-- recipients' rows (`shared::db::deliveries::attempts`) instead of being written as 10 rows of
-- `delivery_attempts`. Rows written before this migration keep their `delivery_attempts`
-- (those notifications have no `in_app_job_id`); email, webhook and every other in-app
-- delivery (digests, system notifications) are still one row per attempt.
ALTER TABLE notifications
    ADD COLUMN in_app_job_id uuid,
    ADD COLUMN in_app_attempt integer CHECK (in_app_attempt >= 1),
    ADD CONSTRAINT notifications_in_app_shape
        CHECK ((in_app_job_id IS NULL) = (in_app_attempt IS NULL));

-- 2. Recipients lose the per-row foreign-key check and keep the cascade, as the delivery log and
-- the feed did (20261211000001): every insert of recipient rows follows its notification's
-- insert in the same transaction (`process_event`'s statement, digests, system
-- notifications), and the notification's deletes take them along by one statement-level
-- trigger, whose delete runs the recipients' own triggers (the unread counters follow).
ALTER TABLE notification_recipients
    DROP CONSTRAINT notification_recipients_project_id_notification_id_fkey;

DROP TRIGGER notifications_delete_attempts ON notifications;
DROP FUNCTION notifications_delete_attempts();

CREATE FUNCTION notifications_delete_children() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM notification_recipients r USING old_rows o
    WHERE r.project_id = o.project_id AND r.notification_id = o.notification_id;
    DELETE FROM delivery_attempts a USING old_rows o
    WHERE a.project_id = o.project_id AND a.notification_id = o.notification_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER notifications_delete_children
    AFTER DELETE ON notifications REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION notifications_delete_children();
