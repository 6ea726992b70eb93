-- Tuner: the loaded model's /api/ps figures per outcome (bytes, 0 = unknown), so spills can be queried
-- after the fact: 0 < model_vram_bytes < model_size_bytes means layers ran on the CPU (partial offload).

ALTER TABLE tuner_outcome
    ADD COLUMN IF NOT EXISTS model_size_bytes bigint NOT NULL DEFAULT 0,   -- /api/ps size
    ADD COLUMN IF NOT EXISTS model_vram_bytes bigint NOT NULL DEFAULT 0;   -- /api/ps size_vram
