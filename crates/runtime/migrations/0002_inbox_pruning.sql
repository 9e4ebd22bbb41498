-- The inbox is pruned: rows older than INBOX_RETENTION are deleted in batches (see
-- src/pruning.rs). A BRIN index finds them: rows arrive in `processed_at` order, so a summary
-- of each block range is a few pages for the whole table and costs next to nothing on insert,
-- where a B-tree would add a write to every applied event.
--
-- Numbered in the runtime's own sequence: these migrations keep their own history table,
-- `_messaging_migrations` (see src/database.rs), apart from the service's.

CREATE INDEX inbox_processed_at ON inbox USING brin (processed_at);

-- The outbox relay now deletes the rows it has published instead of setting `published_at`,
-- which stays for rows an earlier version marked (the pruner deletes those). Nothing to change
-- in the schema: a pending row is one that exists, and `outbox_pending` still covers them all.
