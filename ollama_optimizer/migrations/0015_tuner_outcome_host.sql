-- Tuner: which Ollama host (or hardware class) served each outcome ('' = the default host), and the cached
-- prompt tokens Ollama reported (prompt_eval_cached_count, 0 = not reported): learned state is per (host, model).

ALTER TABLE tuner_outcome
    ADD COLUMN IF NOT EXISTS ollama_host text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS prompt_eval_cached_count bigint NOT NULL DEFAULT 0;
