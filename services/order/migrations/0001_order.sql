-- Orders with their saga progress, the history of saga events per order, idempotency keys
-- of POST /orders, and the catalogue read model fed by inventory.product_updated.

CREATE TABLE orders (
    order_id           UUID        PRIMARY KEY,
    customer_id        TEXT        NOT NULL,
    email              TEXT        NOT NULL,
    -- [{"sku", "quantity", "unit_price_cents"}], priced when the order was placed.
    items              JSONB       NOT NULL,
    total_cents        BIGINT      NOT NULL CHECK (total_cents >= 0),
    payment_method     TEXT        NOT NULL,
    -- {"country", "address"}
    shipping           JSONB       NOT NULL,
    status             TEXT        NOT NULL CHECK (status IN
                           ('pending', 'reserved', 'paid', 'cancelling', 'completed', 'rejected', 'cancelled')),
    reason             TEXT,
    -- Compensations confirmed so far; an order is cancelled only once all it needs are in.
    inventory_released BOOLEAN     NOT NULL DEFAULT false,
    payment_refunded   BOOLEAN     NOT NULL DEFAULT false,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One entry per saga event type per order: a duplicate of an event never grows the history.
CREATE TABLE order_history (
    order_id   UUID        NOT NULL REFERENCES orders (order_id),
    event_type TEXT        NOT NULL,
    at         TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (order_id, event_type)
);

CREATE TABLE idempotency_keys (
    key        TEXT        PRIMARY KEY,
    -- The request body, compared as JSON when the key is used again.
    request    JSONB       NOT NULL,
    order_id   UUID        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE catalogue (
    sku         TEXT        PRIMARY KEY,
    name        TEXT        NOT NULL,
    price_cents BIGINT      NOT NULL,
    -- Time of the product_updated event applied last, so an older one never wins.
    updated_at  TIMESTAMPTZ NOT NULL
);
