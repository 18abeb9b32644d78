"""The gRPC face: arbiter.v1.RewardService over the same runtime as HTTP, plus health and reflection."""
