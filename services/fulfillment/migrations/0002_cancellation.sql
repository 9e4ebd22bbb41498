-- A shipment can be cancelled: before it was booked (no id, no carrier) or after (it keeps
-- the id and carrier it had).
ALTER TABLE shipments
    DROP CONSTRAINT shipments_status_check,
    DROP CONSTRAINT shipments_check,
    DROP CONSTRAINT shipments_check1;

ALTER TABLE shipments
    ADD CONSTRAINT shipments_status_check
        CHECK (status IN ('scheduled', 'failed', 'cancelled')),
    ADD CONSTRAINT scheduled_has_id_and_carrier
        CHECK (status <> 'scheduled' OR (shipment_id IS NOT NULL AND carrier IS NOT NULL)),
    ADD CONSTRAINT only_failed_has_reason
        CHECK ((status = 'failed') = (reason IS NOT NULL));
