"""Arbiter's gRPC protocol, version 1: `reward.proto` and the code generated from it (checked in)."""
