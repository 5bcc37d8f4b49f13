"""LLM Ladder's engine: curriculum, implementations, stubs, pytest plugin, grading and CLI."""
