-- The metrics endpoint counts sagas in flight by status at every scrape; this index keeps
-- that proportional to the open orders, not to every order ever placed.
CREATE INDEX orders_in_flight ON orders (status, created_at)
    WHERE status IN ('pending', 'reserved', 'paid', 'cancelling');
