-- The command each user has running, on whichever replica: one at a time
-- per user across the cluster. A lease, renewed while the command runs,
-- so a replica that dies leaves its users free again when it expires.
CREATE TABLE command_leases (
    user_id    BIGINT      PRIMARY KEY,
    label      TEXT        NOT NULL,
    -- The user was told once that it is still running.
    told       BOOLEAN     NOT NULL DEFAULT false,
    -- Which ticket holds it: only its holder renews or ends it.
    holder     TEXT        NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
