-- Bounded lookup: each fingerprint row carries its template's stable window, and the probe-key indexes
-- are ordered by it, so a lookup reads at most a fixed number of rows per probe key (the templates with
-- the smallest stable window first: the only ones a match at that window can cover) however many
-- templates share a head. Also: room on template pages for HOT updates of the per-observation counters.
--
-- Online-safe (expand): a nullable column and a storage parameter are catalog-only changes; triggers keep
-- the column equal to the template's stable window for rows written from now on by any release; 0032
-- fills older rows and swaps the indexes without blocking writes.

ALTER TABLE matcher_fingerprint ADD COLUMN IF NOT EXISTS stable_window integer;

ALTER TABLE matcher_template SET (fillfactor = 85);

-- A row inserted without the stable window (a release that does not know the column) takes its template's.
CREATE OR REPLACE FUNCTION matcher_fingerprint_stable_window() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    SELECT t.stable_window INTO NEW.stable_window FROM matcher_template t WHERE t.id = NEW.template_id;
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS matcher_fingerprint_stable_window ON matcher_fingerprint;

CREATE TRIGGER matcher_fingerprint_stable_window
    BEFORE INSERT ON matcher_fingerprint
    FOR EACH ROW WHEN (NEW.stable_window IS NULL) EXECUTE FUNCTION matcher_fingerprint_stable_window();

-- A template's stable window moved (grow, shrink, open tail): its fingerprint rows follow.
CREATE OR REPLACE FUNCTION matcher_template_stable_window() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE matcher_fingerprint SET stable_window = NEW.stable_window WHERE template_id = NEW.id;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS matcher_template_stable_window ON matcher_template;

CREATE TRIGGER matcher_template_stable_window
    AFTER UPDATE OF stable_window ON matcher_template
    FOR EACH ROW WHEN (OLD.stable_window IS DISTINCT FROM NEW.stable_window)
    EXECUTE FUNCTION matcher_template_stable_window();
