-- Matcher lookup with one index scan per block position: each 16-bit block becomes a probe key
-- (window_size << 16 | block value), so all windows' exact and 1-bit-variant probes of one block
-- are a single `key = ANY(array)` scan of one covering index (replaces the b0..b3 indexes).
-- Also: the shortest prompt a template has seen (below).

ALTER TABLE matcher_fingerprint
    ADD COLUMN IF NOT EXISTS k0 integer GENERATED ALWAYS AS ((window_size << 16) | (fp & 65535)::integer) STORED,
    ADD COLUMN IF NOT EXISTS k1 integer GENERATED ALWAYS AS ((window_size << 16) | ((fp >> 16) & 65535)::integer) STORED,
    ADD COLUMN IF NOT EXISTS k2 integer GENERATED ALWAYS AS ((window_size << 16) | ((fp >> 32) & 65535)::integer) STORED,
    ADD COLUMN IF NOT EXISTS k3 integer GENERATED ALWAYS AS ((window_size << 16) | ((fp >> 48) & 65535)::integer) STORED;

DROP INDEX IF EXISTS matcher_fingerprint_b0_idx, matcher_fingerprint_b1_idx,
                     matcher_fingerprint_b2_idx, matcher_fingerprint_b3_idx;
ALTER TABLE matcher_fingerprint DROP COLUMN IF EXISTS b0, DROP COLUMN IF EXISTS b1,
                                DROP COLUMN IF EXISTS b2, DROP COLUMN IF EXISTS b3;

CREATE INDEX IF NOT EXISTS matcher_fingerprint_k0_idx ON matcher_fingerprint (k0) INCLUDE (fp, template_id);
CREATE INDEX IF NOT EXISTS matcher_fingerprint_k1_idx ON matcher_fingerprint (k1) INCLUDE (fp, template_id);
CREATE INDEX IF NOT EXISTS matcher_fingerprint_k2_idx ON matcher_fingerprint (k2) INCLUDE (fp, template_id);
CREATE INDEX IF NOT EXISTS matcher_fingerprint_k3_idx ON matcher_fingerprint (k3) INCLUDE (fp, template_id);

-- Shortest prompt (largest window) a template has seen: a query shorter than all of them is a
-- different (shorter) template that shares the prefix, not a partial instance.
ALTER TABLE matcher_template ADD COLUMN IF NOT EXISTS shortest_window integer NOT NULL DEFAULT 1;
