-- The fulfillment service's own tables: where each order ships to (from `order.placed`) and
-- the one shipment decision per order (made when its payment is authorized).

CREATE TABLE destinations (
    order_id   UUID        PRIMARY KEY,
    -- ISO 3166-1 alpha-2, as the order carried it.
    country    TEXT        NOT NULL,
    -- Personal data: stored to ship, never logged.
    address    TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE shipments (
    order_id    UUID        PRIMARY KEY REFERENCES destinations (order_id),
    status      TEXT        NOT NULL CHECK (status IN ('scheduled', 'failed')),
    shipment_id UUID        UNIQUE,
    carrier     TEXT,
    reason      TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- A scheduled shipment has an id and a carrier; a failed one only a reason.
    CHECK ((status = 'scheduled') = (shipment_id IS NOT NULL AND carrier IS NOT NULL)),
    CHECK ((status = 'failed') = (reason IS NOT NULL))
);
