-- Matcher: a template whose fixed head ends at its stable window and whose prompts continue with text
-- that differs every time (chat history, retrieved documents, a user's request). Expand-only: a matcher
-- that does not know the column leaves it false.
ALTER TABLE matcher_template ADD COLUMN IF NOT EXISTS open_tail boolean NOT NULL DEFAULT false;
