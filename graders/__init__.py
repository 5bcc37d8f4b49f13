"""LLM Ladder's engine: curriculum, implementations, stubs, the pytest plugin and the `ladder` CLI."""
