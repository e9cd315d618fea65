"""The HTTP face of the service: OpenAI-compatible routes, errors, auth, metrics, settings."""
