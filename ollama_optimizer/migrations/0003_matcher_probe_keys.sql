-- Matcher lookup with one index scan per block position: each 16-bit block becomes a probe key
-- (window_size << 16 | block value), so all windows' exact and 1-bit-variant probes of one block
-- are a single `key = ANY(array)` scan of one covering index (replaces the b0..b3 indexes).
-- Also: the shortest prompt a template has seen (below).
--
-- Online-safe (expand): plain nullable columns and a constant default are catalog-only changes (no
-- table rewrite); a trigger fills the keys of every row written from now on, by any release; 0006
-- fills older rows in batches and builds the indexes concurrently; 0007 (contract) drops b0..b3.
-- Databases migrated before checksums existed applied an earlier text of this file, which added the
-- keys as generated columns; both shapes serve the same queries (see SUPERSEDED in __init__.py).

ALTER TABLE matcher_fingerprint
    ADD COLUMN IF NOT EXISTS k0 integer,
    ADD COLUMN IF NOT EXISTS k1 integer,
    ADD COLUMN IF NOT EXISTS k2 integer,
    ADD COLUMN IF NOT EXISTS k3 integer;

CREATE OR REPLACE FUNCTION matcher_fingerprint_probe_keys() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.k0 := (NEW.window_size << 16) | (NEW.fp & 65535)::integer;
    NEW.k1 := (NEW.window_size << 16) | ((NEW.fp >> 16) & 65535)::integer;
    NEW.k2 := (NEW.window_size << 16) | ((NEW.fp >> 32) & 65535)::integer;
    NEW.k3 := (NEW.window_size << 16) | ((NEW.fp >> 48) & 65535)::integer;
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS matcher_fingerprint_probe_keys ON matcher_fingerprint;
CREATE TRIGGER matcher_fingerprint_probe_keys
    BEFORE INSERT OR UPDATE OF fp, window_size ON matcher_fingerprint
    FOR EACH ROW EXECUTE FUNCTION matcher_fingerprint_probe_keys();

-- Shortest prompt (largest window) a template has seen: a query shorter than all of them is a
-- different (shorter) template that shares the prefix, not a partial instance.
ALTER TABLE matcher_template ADD COLUMN IF NOT EXISTS shortest_window integer NOT NULL DEFAULT 1;
