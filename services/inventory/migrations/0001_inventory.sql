-- Products with their stock, and one reservation per order.

CREATE TABLE products (
    sku         TEXT        PRIMARY KEY,
    name        TEXT        NOT NULL,
    price_cents BIGINT      NOT NULL CHECK (price_cents >= 0),
    on_hand     BIGINT      NOT NULL CHECK (on_hand >= 0),
    reserved    BIGINT      NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The last line of defence against overselling: never more held than there is.
    CONSTRAINT reserved_within_on_hand CHECK (reserved <= on_hand)
);

CREATE TABLE reservations (
    order_id   UUID        PRIMARY KEY,
    status     TEXT        NOT NULL CHECK (status IN ('reserved', 'rejected', 'released', 'committed')),
    -- [{"sku": "...", "quantity": n}], the lines held for the order.
    items      JSONB       NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
