-- Orders the order service asked to cancel, remembered so that a step arriving later is
-- never performed, and so that a repeated request is answered once.
CREATE TABLE cancellations (
    order_id     UUID        PRIMARY KEY,
    requested_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
