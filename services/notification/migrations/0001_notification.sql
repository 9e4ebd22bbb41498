-- The notification service's own tables: the contact read model fed by `order.placed`, and
-- the notifications sent, exactly one per order and kind.

CREATE TABLE contacts (
    order_id    UUID        PRIMARY KEY,
    customer_id TEXT        NOT NULL,
    -- Personal data: used to notify, never logged.
    email       TEXT        NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE notifications (
    order_id  UUID        NOT NULL REFERENCES contacts (order_id),
    kind      TEXT        NOT NULL
              CHECK (kind IN ('placed', 'shipment_scheduled', 'completed', 'cancelled', 'rejected')),
    recipient TEXT        NOT NULL,
    sent_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, kind)
);
