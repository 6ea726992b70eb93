-- migrate: no-transaction
-- The stable window of fingerprint rows written before 0031's triggers, in batches that commit one by one;
-- then the probe-key indexes ordered by it, built without blocking writes. They serve the previous
-- release's `k = ANY(...)` probes too, so the old indexes are dropped the same way.

DO $$
DECLARE
    lo bigint;
    top bigint;
BEGIN
    SELECT min(template_id), max(template_id) INTO lo, top FROM matcher_fingerprint WHERE stable_window IS NULL;
    WHILE lo <= top LOOP
        UPDATE matcher_fingerprint f SET stable_window = t.stable_window
          FROM matcher_template t
         WHERE t.id = f.template_id AND f.template_id >= lo AND f.template_id < lo + 2000
           AND f.stable_window IS NULL;
        COMMIT;
        lo := lo + 2000;
    END LOOP;
END
$$;

CREATE INDEX CONCURRENTLY IF NOT EXISTS matcher_probe_k0_idx ON matcher_fingerprint (k0, stable_window) INCLUDE (fp, template_id);
CREATE INDEX CONCURRENTLY IF NOT EXISTS matcher_probe_k1_idx ON matcher_fingerprint (k1, stable_window) INCLUDE (fp, template_id);
CREATE INDEX CONCURRENTLY IF NOT EXISTS matcher_probe_k2_idx ON matcher_fingerprint (k2, stable_window) INCLUDE (fp, template_id);
CREATE INDEX CONCURRENTLY IF NOT EXISTS matcher_probe_k3_idx ON matcher_fingerprint (k3, stable_window) INCLUDE (fp, template_id);

DROP INDEX CONCURRENTLY IF EXISTS matcher_fingerprint_k0_idx;
DROP INDEX CONCURRENTLY IF EXISTS matcher_fingerprint_k1_idx;
DROP INDEX CONCURRENTLY IF EXISTS matcher_fingerprint_k2_idx;
DROP INDEX CONCURRENTLY IF EXISTS matcher_fingerprint_k3_idx;
