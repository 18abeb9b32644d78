"""The HTTP + gRPC server that serves bundles (see docs/bundle.md)."""
