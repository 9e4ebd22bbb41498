-- The W3C `traceparent` of the request that placed the order: the saga's trace. Work the
-- order service starts later on its own (the deadline timer, a customer's cancel) joins this
-- trace, and GET /orders/{id} shows its trace id. NULL when tracing was off.

ALTER TABLE orders ADD COLUMN traceparent TEXT;
