-- A payment cancelled before it was charged: it never will be.
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('pending', 'authorized', 'declined', 'refunded', 'cancelled'));
