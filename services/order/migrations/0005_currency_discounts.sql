-- `order.placed` v2: an order's amounts have a currency and each line a discount. Orders
-- placed before were in euros (v1's implicit currency) without discounts; their lines get
-- the explicit zero so every stored line has the v2 shape.
ALTER TABLE orders
    ADD COLUMN currency TEXT NOT NULL DEFAULT 'EUR' CHECK (currency ~ '^[A-Z]{3}$');

UPDATE orders
SET items = (
    SELECT jsonb_agg(line || '{"discount_cents": 0}'::jsonb ORDER BY position)
    FROM jsonb_array_elements(items) WITH ORDINALITY AS lines (line, position)
)
WHERE EXISTS (
    SELECT 1 FROM jsonb_array_elements(items) AS lines (line)
    WHERE NOT line ? 'discount_cents'
);
