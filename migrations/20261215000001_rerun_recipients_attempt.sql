-- A recipient that a re-run of `process_event` adds to an earlier run's notification (a user
-- given the rule's role between the runs) is delivered in-app by the re-run, not by the run
-- the notification records (`notifications.in_app_job_id`, `in_app_attempt`). Their row names
-- that job and attempt; every other recipient's row leaves them NULL (the notification's are
-- theirs), so the common case writes nothing more. `shared::db::deliveries` reads the
-- recipient's own before the notification's.
ALTER TABLE notification_recipients
    ADD COLUMN in_app_job_id uuid,
    ADD COLUMN in_app_attempt integer CHECK (in_app_attempt >= 1),
    ADD CONSTRAINT notification_recipients_in_app_shape
        CHECK ((in_app_job_id IS NULL) = (in_app_attempt IS NULL));
