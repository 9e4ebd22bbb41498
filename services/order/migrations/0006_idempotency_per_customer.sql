-- An idempotency key is the customer's own: two customers who happen to pick the same key
-- place two orders, and neither learns of the other's (a shared key space would answer one
-- with the other's order id). Existing keys take the customer of the order they placed.

ALTER TABLE idempotency_keys ADD COLUMN customer_id TEXT;

UPDATE idempotency_keys AS k
SET customer_id = o.customer_id
FROM orders AS o
WHERE o.order_id = k.order_id;

-- A key whose order is gone can no longer be replayed by anyone.
DELETE FROM idempotency_keys WHERE customer_id IS NULL;

ALTER TABLE idempotency_keys
    ALTER COLUMN customer_id SET NOT NULL,
    DROP CONSTRAINT idempotency_keys_pkey,
    ADD PRIMARY KEY (customer_id, key);
