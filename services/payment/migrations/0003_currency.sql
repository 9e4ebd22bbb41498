-- `order.placed` v2 names the currency of its amounts; every payment before it was in euros
-- (v1's implicit currency), which the default records.
ALTER TABLE payments
    ADD COLUMN currency TEXT NOT NULL DEFAULT 'EUR' CHECK (currency ~ '^[A-Z]{3}$');
