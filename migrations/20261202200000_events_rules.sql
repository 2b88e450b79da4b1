-- Events, the rules that match them, and the notifications they create (issue 9). Every table
-- carries project_id and every key starts with it; every query filters on it.

-- Bumped in the transaction of every rule change. An event records the value it saw when it
-- was accepted; a worker whose cached rules are older reloads them, so a cached entry never
-- misses a rule that was active when the event was accepted.
ALTER TABLE projects ADD COLUMN rules_version bigint NOT NULL DEFAULT 0;

CREATE TABLE rules (
    project_id uuid NOT NULL REFERENCES projects (project_id) ON DELETE CASCADE,
    rule_id uuid NOT NULL,
    name text NOT NULL,
    description text NOT NULL DEFAULT '',
    -- exact types or `prefix.*`
    event_types text[] NOT NULL CHECK (cardinality(event_types) BETWEEN 1 AND 20),
    -- CEL over `event`; NULL matches every event of the types
    condition text,
    title_template text NOT NULL,
    body_template text NOT NULL DEFAULT '',
    target_role_ids uuid[] NOT NULL,
    channels text[] NOT NULL CHECK (channels <@ ARRAY['inApp', 'email', 'webhook']),
    priority integer NOT NULL DEFAULT 0,
    active boolean NOT NULL DEFAULT true,
    sound text,
    suppression_max_fires integer,
    suppression_window_secs integer,
    last_error text,
    last_error_at timestamptz,
    created_by uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, rule_id),
    CHECK ((suppression_max_fires IS NULL) = (suppression_window_secs IS NULL))
);
CREATE TRIGGER rules_updated_at BEFORE UPDATE ON rules
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE INDEX rules_project_created ON rules (project_id, created_at, rule_id);

-- Ids are UUIDv7: time-ordered, so the primary key is also the list's order and a time range
-- is a key range.
CREATE TABLE events (
    project_id uuid NOT NULL REFERENCES projects (project_id) ON DELETE CASCADE,
    event_id uuid NOT NULL,
    type text NOT NULL,
    source text,
    payload jsonb NOT NULL,
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    idempotency_key text,
    job_id uuid NOT NULL,
    rules_version bigint NOT NULL,
    processed_at timestamptz,
    matched_rule_ids uuid[] NOT NULL DEFAULT '{}',
    notification_count integer NOT NULL DEFAULT 0,
    recipient_count integer NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, event_id)
);
CREATE UNIQUE INDEX events_idempotency ON events (project_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX events_project_type ON events (project_id, type, event_id);
CREATE INDEX events_project_source ON events (project_id, source, event_id)
    WHERE source IS NOT NULL;
CREATE INDEX events_unprocessed ON events (project_id, event_id) WHERE processed_at IS NULL;
-- for the retention sweep (scheduler issue): oldest first across projects
CREATE INDEX events_received ON events (received_at);

CREATE TABLE notifications (
    project_id uuid NOT NULL REFERENCES projects (project_id) ON DELETE CASCADE,
    notification_id uuid NOT NULL,
    event_id uuid NOT NULL,
    rule_id uuid NOT NULL,
    title text NOT NULL,
    body text NOT NULL,
    priority integer NOT NULL,
    sound text,
    channels text[] NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, notification_id),
    -- a re-run of process_event creates no second notification
    CONSTRAINT notifications_event_rule_key UNIQUE (project_id, event_id, rule_id),
    FOREIGN KEY (project_id, event_id) REFERENCES events (project_id, event_id) ON DELETE CASCADE
);
CREATE INDEX notifications_project_created ON notifications (project_id, created_at);

CREATE TABLE notification_recipients (
    project_id uuid NOT NULL,
    notification_id uuid NOT NULL,
    user_id uuid NOT NULL,
    read_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, notification_id, user_id),
    FOREIGN KEY (project_id, notification_id)
        REFERENCES notifications (project_id, notification_id) ON DELETE CASCADE
);
CREATE INDEX notification_recipients_user ON notification_recipients (project_id, user_id, notification_id);
