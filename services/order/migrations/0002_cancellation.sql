-- Customer cancellation and saga deadlines: the third confirmation a cancellation needs, and
-- the durable deadline the order service's timer sweeps (it survives restarts).

ALTER TABLE orders
    ADD COLUMN fulfillment_cancelled BOOLEAN NOT NULL DEFAULT false,
    -- NULL for orders placed before deadlines existed: they have none.
    ADD COLUMN deadline_at TIMESTAMPTZ;

-- The sweep only looks at open orders whose deadline is due.
CREATE INDEX orders_open_deadline ON orders (deadline_at)
    WHERE status IN ('pending', 'reserved', 'paid');
