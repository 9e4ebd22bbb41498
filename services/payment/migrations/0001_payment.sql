-- The payment service's own table: one payment per order, learned from `order.placed`,
-- authorized (or declined) when its stock is reserved, refunded when fulfillment fails.

CREATE TABLE payments (
    order_id         UUID        PRIMARY KEY,
    amount_cents     BIGINT      NOT NULL CHECK (amount_cents >= 0),
    -- A payment token: stored to charge it, never logged.
    payment_method   TEXT        NOT NULL,
    status           TEXT        NOT NULL
                     CHECK (status IN ('pending', 'authorized', 'declined', 'refunded')),
    authorization_id TEXT,
    refunded_cents   BIGINT      NOT NULL DEFAULT 0
                     CHECK (refunded_cents BETWEEN 0 AND amount_cents),
    decline_reason   TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The gateway's reference exists exactly for what it authorized, a reason exactly for
    -- what it declined, and only a refunded payment has anything refunded.
    CHECK ((authorization_id IS NOT NULL) = (status IN ('authorized', 'refunded'))),
    CHECK ((decline_reason IS NOT NULL) = (status = 'declined')),
    CHECK (refunded_cents = 0 OR status = 'refunded')
);
