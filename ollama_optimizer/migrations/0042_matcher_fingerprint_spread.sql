-- Matcher: per template window, how far the observations folded at that window were from the template's
-- fingerprint there: ``compared`` folds, ``distance_sum`` their Hamming distances (to the fingerprint before
-- each fold). Past a template's head this tells text that repeats from one prompt to the next (a slot
-- template's fixed part: a small usual distance) from text that varies (an open tail: about what unrelated
-- continuations give). Counts only, no text. Expand only: a matcher that does not know the columns leaves
-- them 0, which reads as "no evidence".
ALTER TABLE matcher_fingerprint
    ADD COLUMN IF NOT EXISTS compared integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS distance_sum bigint NOT NULL DEFAULT 0;
