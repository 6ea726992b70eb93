-- migrate: contract
-- The b0..b3 block columns and their indexes, read only by matchers released before 0003: dropped once
-- none runs. Dropping a column is a catalog change (no rewrite); each lock is brief.

DROP INDEX IF EXISTS matcher_fingerprint_b0_idx, matcher_fingerprint_b1_idx,
                     matcher_fingerprint_b2_idx, matcher_fingerprint_b3_idx;
ALTER TABLE matcher_fingerprint DROP COLUMN IF EXISTS b0, DROP COLUMN IF EXISTS b1,
                                DROP COLUMN IF EXISTS b2, DROP COLUMN IF EXISTS b3;
