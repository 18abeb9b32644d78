"""Who may call what, and how often: API keys with scopes, and token-bucket rate limits per key."""
