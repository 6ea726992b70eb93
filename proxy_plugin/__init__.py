"""Thin client of the optimizer: the ``opt`` agent for ollama-smart-proxy and the Ollama-API gateway."""
