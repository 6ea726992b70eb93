-- migrate: no-transaction
-- Probe keys of the rows written before 0003's trigger, in batches of templates that commit one by
-- one (row locks held briefly; the matcher keeps serving), then the probe-key indexes built without
-- blocking writes. A database whose keys are generated columns (0003 as first released) has nothing
-- to fill and already has the indexes.

DO $$
DECLARE
    lo bigint;
    top bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute
                   WHERE attrelid = 'matcher_fingerprint'::regclass AND attname = 'k0' AND attgenerated = '') THEN
        RETURN;
    END IF;
    SELECT min(template_id), max(template_id) INTO lo, top FROM matcher_fingerprint;
    WHILE lo <= top LOOP
        UPDATE matcher_fingerprint
           SET k0 = (window_size << 16) | (fp & 65535)::integer,
               k1 = (window_size << 16) | ((fp >> 16) & 65535)::integer,
               k2 = (window_size << 16) | ((fp >> 32) & 65535)::integer,
               k3 = (window_size << 16) | ((fp >> 48) & 65535)::integer
         WHERE template_id >= lo AND template_id < lo + 2000 AND k0 IS NULL;
        COMMIT;
        lo := lo + 2000;
    END LOOP;
END
$$;

CREATE INDEX CONCURRENTLY IF NOT EXISTS matcher_fingerprint_k0_idx ON matcher_fingerprint (k0) INCLUDE (fp, template_id);
CREATE INDEX CONCURRENTLY IF NOT EXISTS matcher_fingerprint_k1_idx ON matcher_fingerprint (k1) INCLUDE (fp, template_id);
CREATE INDEX CONCURRENTLY IF NOT EXISTS matcher_fingerprint_k2_idx ON matcher_fingerprint (k2) INCLUDE (fp, template_id);
CREATE INDEX CONCURRENTLY IF NOT EXISTS matcher_fingerprint_k3_idx ON matcher_fingerprint (k3) INCLUDE (fp, template_id);
