"""Reward pipelines for RL: specs that compose reward models, judges and rules; telemetry against hacking."""
