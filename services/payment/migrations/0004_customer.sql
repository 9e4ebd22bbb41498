-- The customer each payment is for, from `order.placed`, so the API shows a payment only to
-- the customer who placed the order (or an admin). Payments recorded before this column
-- existed have no owner (NULL): only an admin, or a caller under INSECURE_DEV_AUTH, may read
-- those.
ALTER TABLE payments ADD COLUMN customer_id TEXT;
