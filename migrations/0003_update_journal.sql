-- Telegram updates a replica has acknowledged and not finished handling.
-- A webhook is answered 200 only once its update is written here; the
-- row is leased by the replica handling it, renewed while that replica
-- lives, and marked done when the handling ends. A row whose lease ran
-- out belonged to a replica that died: another replica takes it, once,
-- and tells the user to send their request again (a tool call is never
-- run again on its own: tools may not be idempotent).
--
-- Nothing a user wrote is kept: only who to tell, where, and the name of
-- the command (a `/call`'s arguments or a token's reply may be secret).
CREATE TABLE update_journal (
    update_id   BIGINT      PRIMARY KEY,
    user_id     BIGINT,
    -- Where to tell the user; NULL when the update asked nothing of the
    -- bot (a group message for someone else, a service message).
    chat_id     BIGINT,
    -- The command's name, such as '/call', when the update was a command.
    command     TEXT,
    -- The replica handling it (a random id per process).
    replica     TEXT        NOT NULL,
    lease_until TIMESTAMPTZ NOT NULL,
    -- Done rows stay a while so a redelivery of a finished update (its
    -- 200 got lost) is still recognised and dropped.
    done        BOOLEAN     NOT NULL DEFAULT false,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- The rows still being handled: few at any time, so renewals and the
-- sweep scan only them.
CREATE INDEX update_journal_open ON update_journal (replica) WHERE NOT done;
CREATE INDEX update_journal_by_age ON update_journal (received_at);

-- Which replica holds a command lease, so the replica that takes over a
-- dead one's updates frees the users it left busy, at once.
ALTER TABLE command_leases ADD COLUMN replica TEXT;
