"""ollama-optimizer: shared scaffolding for the matcher and tuner services."""
