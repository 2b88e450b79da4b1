-- Webhook endpoints (issue 10): where a project's notifications are POSTed, signed per Standard
-- Webhooks 1.0. Signing secrets must be usable to sign, so they cannot be hashed: they are
-- stored sealed (ChaCha20-Poly1305 under a key derived from JWT_SECRET with its own label,
-- `shared::secrets::seal_webhook_secret`), never in the clear. After a rotation the previous
-- secret keeps signing (a second signature) until previous_secret_expires_at.

CREATE TABLE webhook_endpoints (
    project_id uuid NOT NULL REFERENCES projects (project_id) ON DELETE CASCADE,
    endpoint_id uuid NOT NULL,
    url text NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    description text NOT NULL DEFAULT '',
    -- exact types or `prefix.*` (`*`: every type); empty: every type
    event_types text[] NOT NULL DEFAULT '{}' CHECK (cardinality(event_types) <= 20),
    enabled boolean NOT NULL DEFAULT true,
    secret_sealed text NOT NULL,
    previous_secret_sealed text,
    previous_secret_expires_at timestamptz,
    -- the start of the current run of failed deliveries (NULL: the last one succeeded)
    failing_since timestamptz,
    last_success_at timestamptz,
    last_failure_at timestamptz,
    -- set when the endpoint is disabled (by hand: NULL reason is not used; automatically: the
    -- reason says why); cleared when it is enabled again
    disabled_at timestamptz,
    disabled_reason text,
    created_by uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, endpoint_id),
    CONSTRAINT webhook_endpoints_previous
        CHECK ((previous_secret_sealed IS NULL) = (previous_secret_expires_at IS NULL))
);
CREATE TRIGGER webhook_endpoints_updated_at BEFORE UPDATE ON webhook_endpoints
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE INDEX webhook_endpoints_project_created ON webhook_endpoints (project_id, created_at, endpoint_id);
