"""Tuner service: learns num_ctx / num_batch per model and template from Ollama telemetry."""
