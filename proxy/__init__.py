"""tiergate: an OpenAI-compatible proxy that routes each LLM call to the tier its task needs."""
