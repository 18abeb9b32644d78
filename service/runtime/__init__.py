"""The serving runtime shared by the HTTP and gRPC faces: loaded models and their batching queues."""
