"""Arbiter: reward models and preference evaluation for RLHF."""

__version__ = "0.1.0"
