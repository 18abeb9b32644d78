"""The light Python client and trainer adapters: no torch, no server dependencies."""
