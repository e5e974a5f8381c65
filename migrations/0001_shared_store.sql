-- The shared store of several mcpgram replicas.
--
-- Secrets never reach the database in clear: every BYTEA column below is
-- age ciphertext sealed inside the bot with the vault's key, and names the
-- row it was sealed for, so a value moved to another row is refused.
-- Telegram user ids are kept as BIGINT (they fit; the bot converts).

-- One user's standing with one server: the OAuth client the tokens were
-- issued to (with its secret, if any) and the tokens, sealed apart so a
-- refresh rewrites the tokens only.
CREATE TABLE connections (
    user_id     BIGINT      NOT NULL,
    server_id   TEXT        NOT NULL,
    client      BYTEA       NOT NULL,
    credentials BYTEA       NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, server_id)
);

-- Clients registered dynamically, shared by every user of a server.
CREATE TABLE registrations (
    server_id    TEXT  NOT NULL,
    redirect_uri TEXT  NOT NULL,
    -- '' when the authorization server named no issuer.
    issuer       TEXT  NOT NULL,
    client       BYTEA NOT NULL,
    PRIMARY KEY (server_id, redirect_uri, issuer)
);

-- Authorization flows waiting for their callback. The state and the start
-- id are kept as SHA-256 digests: a look at the table hands out no live
-- link. The whole flow (PKCE verifier included) is sealed in `flow`; the
-- columns beside it are what the queries select on, and what changes
-- after the flow is made (the browser binding, the chat message).
CREATE TABLE pending_flows (
    state_hash      BYTEA   PRIMARY KEY,
    start_hash      BYTEA   NOT NULL UNIQUE,
    user_id         BIGINT  NOT NULL,
    server_id       TEXT    NOT NULL,
    -- Seconds since the Unix epoch, by the bot's clock.
    expires_at      BIGINT  NOT NULL,
    binding         TEXT,
    message_chat_id BIGINT,
    message_id      INTEGER,
    flow            BYTEA   NOT NULL
);
CREATE INDEX pending_flows_by_user ON pending_flows (user_id, server_id);
CREATE INDEX pending_flows_by_expiry ON pending_flows (expires_at);

-- Tools a user allowed to run unasked. Not secret, so in clear: listing
-- them needs no key.
CREATE TABLE consents (
    user_id   BIGINT NOT NULL,
    server_id TEXT   NOT NULL,
    tool      TEXT   NOT NULL,
    PRIMARY KEY (user_id, server_id, tool)
);

-- Tokens users gave themselves with /token, sealed.
CREATE TABLE personal_tokens (
    user_id   BIGINT NOT NULL,
    server_id TEXT   NOT NULL,
    token     BYTEA  NOT NULL,
    PRIMARY KEY (user_id, server_id)
);
