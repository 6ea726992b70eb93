-- Tuner: what each outcome changed against Ollama alone (definitions in ollama_optimizer/benefit.py): whether
-- Ollama loaded a runner for it and why (load_cause 0 none, 1 the optimizer's option change, 2 the client's,
-- 3 other), whether the clients' own options would have reloaded it, the context Ollama would have used and
-- whether the prompt was longer, and its prompt seconds estimated at the baseline speed (0 = no estimate).

ALTER TABLE tuner_outcome
    ADD COLUMN IF NOT EXISTS runner_loaded boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS load_cause smallint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS baseline_reload boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS baseline_num_ctx integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS baseline_truncated boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS prompt_seconds_baseline double precision NOT NULL DEFAULT 0;
