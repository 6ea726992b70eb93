-- migrate: no-transaction
-- Tuner: templates are loaded into memory on demand; pinned ones at start-up, found through this index
-- without reading every rule (start-up time must not grow with the templates stored).

CREATE INDEX CONCURRENTLY IF NOT EXISTS tuner_rule_pinned ON tuner_rule (model, template_id) WHERE pinned;
