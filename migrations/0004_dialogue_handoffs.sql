-- Which replica holds each user's open dialogue (a guided call's
-- questions, a server's question, /token): a reply that reaches another
-- replica is handed to that one. A lease, so a replica that dies leaves
-- no user pointing at it for long.
CREATE TABLE dialogue_homes (
    user_id    BIGINT      PRIMARY KEY,
    replica    TEXT        NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

-- Updates on their way from the replica that received them to the one
-- holding the user's dialogue, sealed (a reply may hold a token). Taken
-- once by their replica with DELETE … RETURNING.
CREATE TABLE handoffs (
    id         BIGSERIAL   PRIMARY KEY,
    replica    TEXT        NOT NULL,
    sealed     BYTEA       NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
