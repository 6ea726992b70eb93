"""Benchmarks and the Ollama emulator they run against (run as `python -m bench.NAME`)."""
