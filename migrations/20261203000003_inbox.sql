-- The in-app inbox and its live stream (issue 10): per-recipient delivery, read and soft
-- deletion; the first acknowledgement of a notification; actions taken from its view; and a
-- per-user feed whose sequence numbers commit in order (the stream's resume point).

-- delivered_at: set by in-app delivery; from then on the notification is in the user's inbox.
-- A suppressed notification, or a user whose in-app channel is off, never gets one.
-- read_at (issue 9) is set when the user acknowledges it; deleted_at hides it from the user.
ALTER TABLE notification_recipients
    ADD COLUMN delivered_at timestamptz,
    ADD COLUMN deleted_at timestamptz;

-- The inbox list: a user's delivered, undeleted notifications, newest first.
CREATE INDEX notification_recipients_inbox
    ON notification_recipients (project_id, user_id, notification_id DESC)
    WHERE delivered_at IS NOT NULL AND deleted_at IS NULL;

-- The first recipient to acknowledge, visible to every recipient.
ALTER TABLE notifications
    ADD COLUMN acknowledged_by uuid,
    ADD COLUMN acknowledged_at timestamptz,
    ADD CONSTRAINT notifications_ack_shape
        CHECK ((acknowledged_by IS NULL) = (acknowledged_at IS NULL));

-- One row per user with an inbox. `last_seq` is the user's feed sequence: it is only advanced
-- by `UPDATE … SET last_seq = last_seq + n` while the row is locked, so a transaction holding
-- seq k keeps the next writer waiting until it commits: a user's seqs commit in order, and a
-- reader that sees k+1 also sees k (no late-committing gap for the stream's resume).
-- `unread` is the unread count, kept by the triggers below (delivered, unread, not deleted).
CREATE TABLE inbox_users (
    project_id uuid NOT NULL,
    user_id uuid NOT NULL,
    last_seq bigint NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
    unread bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, user_id),
    FOREIGN KEY (project_id, user_id) REFERENCES users (project_id, user_id) ON DELETE CASCADE
);

-- What happened in a user's inbox, in order: the stream replays it after `Last-Event-ID`.
-- kind: notification (delivered), acknowledged, deleted. The event's data is rendered from the
-- notification's current state when sent.
CREATE TABLE inbox_feed (
    project_id uuid NOT NULL,
    user_id uuid NOT NULL,
    seq bigint NOT NULL,
    kind text NOT NULL CHECK (kind IN ('notification', 'acknowledged', 'deleted')),
    notification_id uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, user_id, seq),
    FOREIGN KEY (project_id, user_id)
        REFERENCES inbox_users (project_id, user_id) ON DELETE CASCADE
);
-- for pruning old entries
CREATE INDEX inbox_feed_created ON inbox_feed (created_at);

-- Actions a user took from a notification's view (`{action, data?}`), bounded at the edge.
CREATE TABLE webview_actions (
    project_id uuid NOT NULL,
    webview_action_id uuid NOT NULL,
    notification_id uuid NOT NULL,
    user_id uuid NOT NULL,
    action text NOT NULL CHECK (length(action) BETWEEN 1 AND 100),
    data jsonb CHECK (data IS NULL OR pg_column_size(data) <= 16384),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, webview_action_id),
    FOREIGN KEY (project_id, notification_id)
        REFERENCES notifications (project_id, notification_id) ON DELETE CASCADE
);
CREATE INDEX webview_actions_notification
    ON webview_actions (project_id, notification_id, created_at);

-- The unread counter: one statement-level trigger per operation adds, per user, how many rows
-- became unread minus how many stopped being unread (transition tables: one counter upsert per
-- user per statement, however many rows it touched), in user order, so two statements touching
-- several users cannot deadlock on the counters.
CREATE FUNCTION inbox_unread_delta() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    unread_rows constant text :=
        ' WHERE delivered_at IS NOT NULL AND read_at IS NULL AND deleted_at IS NULL';
    source text;
    r record;
BEGIN
    -- a transition table exists only for the operations that have it
    source := CASE TG_OP
        WHEN 'INSERT' THEN 'SELECT project_id, user_id, 1 AS d FROM new_rows' || unread_rows
        WHEN 'DELETE' THEN 'SELECT project_id, user_id, -1 AS d FROM old_rows' || unread_rows
        ELSE 'SELECT project_id, user_id, 1 AS d FROM new_rows' || unread_rows
            || ' UNION ALL SELECT project_id, user_id, -1 FROM old_rows' || unread_rows
    END;
    FOR r IN EXECUTE
        'SELECT project_id, user_id, sum(d) AS delta FROM (' || source || ') c '
        || 'GROUP BY project_id, user_id HAVING sum(d) <> 0 ORDER BY project_id, user_id'
    LOOP
        INSERT INTO inbox_users (project_id, user_id, unread)
        SELECT r.project_id, r.user_id, greatest(r.delta, 0)
        WHERE EXISTS (SELECT 1 FROM users u
                      WHERE u.project_id = r.project_id AND u.user_id = r.user_id)
        ON CONFLICT (project_id, user_id)
            DO UPDATE SET unread = greatest(inbox_users.unread + r.delta, 0);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER notification_recipients_unread_insert
    AFTER INSERT ON notification_recipients REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION inbox_unread_delta();
CREATE TRIGGER notification_recipients_unread_update
    AFTER UPDATE ON notification_recipients
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION inbox_unread_delta();
CREATE TRIGGER notification_recipients_unread_delete
    AFTER DELETE ON notification_recipients REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION inbox_unread_delta();
