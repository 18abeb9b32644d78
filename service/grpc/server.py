"""The grpc.aio server: RewardService, the standard health service (k8s gRPC probes) and reflection (grpcurl)."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from arbiter.clients.v1 import reward_pb2, reward_pb2_grpc
from arbiter.service.grpc.servicer import SERVICE, DeclaredOnly, RewardServicer
from arbiter.service.runtime.runtime import Runtime
from arbiter.service.settings import ServerSettings


async def start_grpc(settings: ServerSettings, runtime: Runtime) -> grpc.aio.Server:
    """Starts serving on settings.host:settings.grpc_port; the health service says SERVING while the runtime is
    ready (runtime.health: every component loaded, not draining), NOT_SERVING otherwise."""
    options = [
        ("grpc.max_receive_message_length", settings.max_body_bytes),
        ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ]
    server = grpc.aio.server(options=options, interceptors=[DeclaredOnly(runtime.access.enabled)])
    servicer = RewardServicer(runtime, settings.stream_in_flight)
    reward_pb2_grpc.add_RewardServiceServicer_to_server(servicer, server)

    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for name in ("", SERVICE):  # "" is the whole server, what a k8s grpc probe asks by default
        await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

    async def report(ready: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE):
            await health.set(name, status)

    runtime.on_readiness(report)
    names = (
        reward_pb2.DESCRIPTOR.services_by_name["RewardService"].full_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    )
    reflection.enable_server_reflection(names, server)
    address = f"{settings.host}:{settings.grpc_port}"
    if server.add_insecure_port(address) == 0:
        raise OSError(f"cannot bind gRPC to {address}")
    await server.start()
    return server
