-- The messaging tables every service has: the transactional outbox and the consumer inbox.
-- Versioned far below any service migration so both migrators can share `_sqlx_migrations`.

CREATE TABLE outbox (
    id           BIGSERIAL   PRIMARY KEY,
    event_id     UUID        NOT NULL UNIQUE,
    subject      TEXT        NOT NULL,
    -- The CloudEvents envelope exactly as it will be published.
    payload      BYTEA       NOT NULL,
    -- Extra NATS headers (e.g. W3C trace context) captured when the row was written.
    headers      JSONB       NOT NULL DEFAULT '{}'::jsonb,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at TIMESTAMPTZ
);

-- The relay only ever looks at pending rows.
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;

-- Wake the relay when a transaction that wrote to the outbox commits. A hint only: the relay
-- also polls, because notifications are lost while its listening connection is down.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();

CREATE TABLE inbox (
    consumer     TEXT        NOT NULL,
    event_id     UUID        NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
