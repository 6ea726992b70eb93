-- Matcher: learned prompt templates and their per-window SimHash fingerprints.
-- No prompt text is stored anywhere: only 64-bit fingerprints and counters.

CREATE TABLE IF NOT EXISTS matcher_template (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    algorithm_version integer NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    last_seen_at      timestamptz NOT NULL DEFAULT now(),
    observations      bigint NOT NULL DEFAULT 1 CHECK (observations >= 1),
    mean_distance     double precision NOT NULL DEFAULT 0,
    -- Largest window the template reliably matches at (its stable prefix).
    stable_window     integer NOT NULL CHECK (stable_window >= 1),
    -- Consecutive observations that matched only below the stable window (shrink evidence).
    shrink_streak     integer NOT NULL DEFAULT 0,
    -- Consecutive observations that matched above the stable window, and the smallest such window.
    grow_streak       integer NOT NULL DEFAULT 0,
    grow_window       integer NOT NULL DEFAULT 0
);
-- Retention: stale, rarely observed templates.
CREATE INDEX IF NOT EXISTS matcher_template_last_seen_idx ON matcher_template (last_seen_at);

CREATE TABLE IF NOT EXISTS matcher_fingerprint (
    template_id bigint NOT NULL REFERENCES matcher_template (id) ON DELETE CASCADE,
    window_size integer NOT NULL CHECK (window_size >= 1),
    -- Representative fingerprint: bitwise majority of the votes (unsigned 64 bits stored as bigint).
    fp          bigint NOT NULL,
    -- The 16-bit blocks of fp, for the pigeonhole index.
    b0          integer GENERATED ALWAYS AS ((fp & 65535)::integer) STORED,
    b1          integer GENERATED ALWAYS AS (((fp >> 16) & 65535)::integer) STORED,
    b2          integer GENERATED ALWAYS AS (((fp >> 32) & 65535)::integer) STORED,
    b3          integer GENERATED ALWAYS AS (((fp >> 48) & 65535)::integer) STORED,
    -- Per-bit count of observations with that bit set (bit i at index i+1); NULL while count = 1.
    votes       integer[],
    count       bigint NOT NULL DEFAULT 1 CHECK (count >= 1),
    PRIMARY KEY (template_id, window_size)
);
-- Covering indexes: a probe is an index-only scan on (block value, window).
CREATE INDEX IF NOT EXISTS matcher_fingerprint_b0_idx ON matcher_fingerprint (b0, window_size) INCLUDE (fp, template_id);
CREATE INDEX IF NOT EXISTS matcher_fingerprint_b1_idx ON matcher_fingerprint (b1, window_size) INCLUDE (fp, template_id);
CREATE INDEX IF NOT EXISTS matcher_fingerprint_b2_idx ON matcher_fingerprint (b2, window_size) INCLUDE (fp, template_id);
CREATE INDEX IF NOT EXISTS matcher_fingerprint_b3_idx ON matcher_fingerprint (b3, window_size) INCLUDE (fp, template_id);

-- Bits of a fingerprint as 0/1 votes (index i+1 holds bit i).
CREATE OR REPLACE FUNCTION matcher_fp_bits(fp bigint) RETURNS integer[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT array_agg(((fp >> i) & 1)::integer ORDER BY i) FROM generate_series(0, 63) AS i
$$;

-- Element-wise sum of two vote arrays.
CREATE OR REPLACE FUNCTION matcher_add_votes(a integer[], b integer[]) RETURNS integer[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT array_agg(x + y ORDER BY i) FROM unnest(a, b) WITH ORDINALITY AS t(x, y, i)
$$;

-- Bitwise majority of n votes; a tied bit keeps its previous value.
CREATE OR REPLACE FUNCTION matcher_majority(votes integer[], n bigint, prev bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT COALESCE(bit_or(CASE WHEN 2 * v > n THEN 1::bigint << (i - 1)::integer
                                WHEN 2 * v = n THEN prev & (1::bigint << (i - 1)::integer)
                                ELSE 0::bigint END), 0)
    FROM unnest(votes) WITH ORDINALITY AS t(v, i)
$$;
