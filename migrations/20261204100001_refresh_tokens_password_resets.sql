-- Refresh tokens (rotating, one use, in families) and password-reset tokens. Only SHA-256
-- hashes of the tokens are stored.

-- One family per login: every refresh token a login's token rotates into belongs to it.
-- Reusing a spent token revokes the whole family (revoked_at, revoked_reason).
CREATE TABLE refresh_families (
    family_id uuid PRIMARY KEY,
    project_id uuid NOT NULL,
    user_id uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    revoked_reason text,
    FOREIGN KEY (project_id, user_id) REFERENCES users (project_id, user_id) ON DELETE CASCADE
);
CREATE INDEX refresh_families_user ON refresh_families (project_id, user_id)
    WHERE revoked_at IS NULL;

-- One row per refresh token, with the access token issued beside it (its jti and expiry, so
-- revoking the family revokes its access tokens too).
CREATE TABLE refresh_tokens (
    token_hash text PRIMARY KEY,
    family_id uuid NOT NULL REFERENCES refresh_families (family_id) ON DELETE CASCADE,
    access_jti uuid NOT NULL,
    access_expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    -- set when the token is exchanged: a second use is a reuse
    used_at timestamptz
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_access_jti ON refresh_tokens (access_jti);
CREATE INDEX refresh_tokens_expires ON refresh_tokens (expires_at);

-- Password-reset tokens: one-time, short-lived; a newer one replaces the user's older ones.
CREATE TABLE password_resets (
    reset_id uuid PRIMARY KEY,
    project_id uuid NOT NULL,
    user_id uuid NOT NULL,
    token_hash text NOT NULL UNIQUE,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz,
    used_at timestamptz,
    FOREIGN KEY (project_id, user_id) REFERENCES users (project_id, user_id) ON DELETE CASCADE
);
CREATE INDEX password_resets_user ON password_resets (project_id, user_id);
CREATE INDEX password_resets_expires ON password_resets (expires_at);
