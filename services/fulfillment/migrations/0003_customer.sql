-- The customer each order is for, from `order.placed`, so the API shows a shipment only to
-- the customer who placed the order (or an admin). Destinations recorded before this column
-- existed have no owner (NULL): only an admin, or a caller under INSECURE_DEV_AUTH, may read
-- their shipments.
ALTER TABLE destinations ADD COLUMN customer_id TEXT;
