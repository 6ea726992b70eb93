-- Tuner: outcome facts, learned rules per (model, template, param), num_batch bandit arms, per-model state.
-- No prompt text is stored anywhere: only counts, durations, options and ids.

CREATE TABLE IF NOT EXISTS tuner_outcome (
    id                      bigserial PRIMARY KEY,
    outcome_id              text NOT NULL UNIQUE,          -- idempotency key from the client
    decision_id             text NOT NULL DEFAULT '',
    model                   text NOT NULL,
    template_id             bigint NOT NULL DEFAULT 0,     -- 0 = no template matched
    prompt_units            integer NOT NULL DEFAULT 0,
    message_count           integer NOT NULL DEFAULT 0,
    action                  smallint NOT NULL,             -- 1 passthrough, 2 apply
    num_ctx                 integer NOT NULL DEFAULT 0,    -- as sent (0 = Ollama default)
    num_batch               integer NOT NULL DEFAULT 0,
    num_predict             integer NOT NULL DEFAULT 0,
    prompt_eval_count       bigint NOT NULL DEFAULT 0,
    eval_count              bigint NOT NULL DEFAULT 0,
    total_duration_ns       bigint NOT NULL DEFAULT 0,
    load_duration_ns        bigint NOT NULL DEFAULT 0,
    prompt_eval_duration_ns bigint NOT NULL DEFAULT 0,
    eval_duration_ns        bigint NOT NULL DEFAULT 0,
    done_reason             text NOT NULL DEFAULT '',
    counts_known            boolean NOT NULL DEFAULT true,
    latency_seconds         double precision NOT NULL DEFAULT 0,
    ttft_seconds            double precision NOT NULL DEFAULT 0,
    host_rss_bytes          bigint NOT NULL DEFAULT 0,
    gpu_memory_used_bytes   bigint NOT NULL DEFAULT 0,
    gpu_memory_total_bytes  bigint NOT NULL DEFAULT 0,
    loaded_context_length   bigint NOT NULL DEFAULT 0,
    reason_code             text NOT NULL DEFAULT '',      -- the decision's reason (bounded set)
    reload_caused           boolean NOT NULL DEFAULT false,
    reload_avoided          boolean NOT NULL DEFAULT false,
    truncation_prevented    boolean NOT NULL DEFAULT false,
    truncation_detected     boolean NOT NULL DEFAULT false,
    kv_tokens_saved         bigint NOT NULL DEFAULT 0,     -- default context - applied context (APPLY only)
    finished_at             timestamptz NOT NULL,
    received_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS tuner_outcome_finished_idx ON tuner_outcome (finished_at);
CREATE INDEX IF NOT EXISTS tuner_outcome_model_finished_idx ON tuner_outcome (model, finished_at);

-- The learner-parameter table (optimization_rules): one row per (model, template, param).
CREATE TABLE IF NOT EXISTS tuner_rule (
    model           text NOT NULL,
    template_id     bigint NOT NULL,
    param           text NOT NULL CHECK (param IN ('num_ctx', 'num_batch')),
    value           integer NOT NULL DEFAULT 0,
    sample_count    bigint NOT NULL DEFAULT 0,
    confidence      double precision NOT NULL DEFAULT 0,
    success_count   bigint NOT NULL DEFAULT 0,
    total_count     bigint NOT NULL DEFAULT 0,
    pinned          boolean NOT NULL DEFAULT false,
    last_safe_value integer NOT NULL DEFAULT 0,
    truncations     integer NOT NULL DEFAULT 0,
    state           jsonb NOT NULL DEFAULT '{}'::jsonb,  -- bounded need/output histograms, floor
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, template_id, param)
);

-- num_batch bandit: reward = prompt tokens/s, per model and prompt-size class.
CREATE TABLE IF NOT EXISTS tuner_arm (
    model       text NOT NULL,
    size_class  smallint NOT NULL,
    num_batch   integer NOT NULL,
    pulls       bigint NOT NULL DEFAULT 0,
    reward_mean double precision NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, size_class, num_batch)
);

-- Per model: calibration, believed-loaded runner options, reload cost, context limit.
CREATE TABLE IF NOT EXISTS tuner_model (
    model               text PRIMARY KEY,
    units_ratio         double precision NOT NULL DEFAULT 0,   -- upper quantile tokens/unit
    calibration_samples bigint NOT NULL DEFAULT 0,
    managed             boolean NOT NULL DEFAULT false,        -- the tuner applies options to this model
    loaded_num_ctx      integer NOT NULL DEFAULT 0,            -- 0 = Ollama's default
    loaded_num_batch    integer NOT NULL DEFAULT 0,            -- 0 = Ollama's default
    default_num_ctx     integer NOT NULL DEFAULT 0,            -- observed default context, 0 = unknown
    context_limit       integer NOT NULL DEFAULT 0,            -- 0 = unknown
    reload_cost_seconds double precision NOT NULL DEFAULT 0,
    reloads             bigint NOT NULL DEFAULT 0,
    requests            bigint NOT NULL DEFAULT 0,
    state               jsonb NOT NULL DEFAULT '{}'::jsonb,    -- calibration histogram, speeds
    updated_at          timestamptz NOT NULL DEFAULT now()
);
