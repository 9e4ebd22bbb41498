-- Rows a service hands to its own relay straight after commit (see src/outbox.rs, "Hand-off")
-- are left alone by the relay's claims until `relay_after`, and wake no relay: the process
-- that wrote them publishes them in a few milliseconds. Should it not (it crashed), the
-- relay's poll claims them once `relay_after` has passed; a failed publish makes them due at
-- once. Every other row is claimable at once, as before.
ALTER TABLE outbox ADD COLUMN relay_after TIMESTAMPTZ NOT NULL DEFAULT now();

CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Due rows are written with `relay_after` at the statement's time at the latest (the
    -- column's default, `now()`, is the transaction's start); handed-off rows after it.
    IF EXISTS (SELECT 1 FROM inserted WHERE relay_after <= statement_timestamp()) THEN
        PERFORM pg_notify('outbox', '');
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER outbox_notify ON outbox;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
