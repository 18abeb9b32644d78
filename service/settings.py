"""The server's one settings object: defaults, then a YAML file, then ARBITER_* variables, then CLI flags."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

import yaml
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from arbiter.annotation.location import DEFAULT_STORE_URL
from arbiter.judge.settings import JudgeSettings

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

P = TypeVar("P", bound="DataclassInstance")


class ServerSettings(JudgeSettings, BaseSettings):
    """Every setting of `arbiter serve`; the judge's own come from JudgeSettings, which `arbiter label` shares."""

    model_config = SettingsConfigDict(env_prefix="ARBITER_", extra="forbid")

    host: str = Field("127.0.0.1", description="HTTP bind address")
    port: int = Field(8000, description="HTTP port")
    grpc_port: int = Field(50051, description="gRPC port (0 turns gRPC off)")
    bundles: list[str] = Field(
        default_factory=lambda: ["bundles/default"],
        description="bundle folders to serve, each PATH or NAME=PATH; the first is the default model",
    )
    default_model: str | None = Field(None, description="name of the default model (default: the first bundle)")
    backend: Literal["onnx", "torch"] = Field("onnx", description="onnx (ONNX Runtime, no torch) or torch")
    precision: Literal["fp32", "int8", "bf16"] = Field(
        "fp32",
        description="fp32 or int8: which ONNX file of each bundle to run; bf16: each bundle's bf16 weights "
        "(or a checkpoint's, with backend torch) on torch (faster where the matrix units take it; the log gives the "
        "measured speedup)",
    )
    threads: int = Field(0, ge=0, description="inference threads per model (0: all cores)")
    device: str = Field(
        "auto", description="the torch backend's device: auto (CUDA when torch sees one, else cpu), cpu, cuda, cuda:1"
    )
    max_batch_tokens: int | None = Field(
        None,
        gt=0,
        description="padded tokens per inference batch (unset: 1024, or 2048 for bf16 on a CPU: small is fastest "
        "on CPUs; raise it on GPUs)",
    )
    max_batch_size: int = Field(128, gt=0, description="sequences per inference batch")
    max_wait_ms: float = Field(2.0, ge=0, description="how long a batch waits to fill before it runs")
    max_queue: int = Field(4096, gt=0, description="sequences waiting at most; beyond it requests get 429")
    max_items: int = Field(1024, gt=0, description="items per request; beyond it 413")
    remote_timeout_s: float = Field(30.0, gt=0, description="remote models: seconds per request to the engine")
    remote_attempts: int = Field(3, gt=0, description="remote models: tries per request (jittered backoff between)")
    remote_concurrency: int = Field(8, gt=0, description="remote models: requests in flight to each engine")
    remote_batch_size: int = Field(32, gt=0, description="remote models: sequences per request to the engine")
    remote_health_interval_s: float = Field(2.0, gt=0, description="remote models: seconds between /health checks")
    max_request_tokens: int = Field(262144, gt=0, description="tokens per request after truncation; beyond it 413")
    max_body_bytes: int = Field(8 * 1024 * 1024, gt=0, description="request body size; beyond it 413")
    stream_in_flight: int = Field(64, gt=0, description="gRPC ScoreStream: messages scored at once per stream")
    judge_max_chars: int = Field(
        32_000, gt=0, description="characters per judged item (prompt and responses); beyond it 413"
    )
    verifier_workers: int = Field(
        0, ge=0, description="worker processes that run verifiers (math, format, exact, f1); 0: one per core"
    )
    verifier_max_queue: int = Field(
        4096, gt=0, description="verifications waiting for a worker at most; beyond it requests get 429"
    )
    sandbox_backend: Literal["bwrap", "sandbox_fusion"] = Field(
        "bwrap", description="where the code verifier runs programs: bwrap (here) or sandbox_fusion (a cluster)"
    )
    sandbox_url: str | None = Field(None, description="the SandboxFusion server, http://host:8080")
    sandbox_slots: int = Field(4, gt=0, description="programs (the code verifier's) running in the sandbox at once")
    sandbox_max_queue: int = Field(256, gt=0, description="code items waiting for the sandbox; beyond it 429")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    reward_specs: list[str] = Field(
        default_factory=list, description="reward spec files or folders of *.yaml, beside the built-in ones"
    )
    default_reward_spec: str = Field("default", description="the reward spec used when a request names none")
    reward_state_path: str | None = Field(
        str(Path.home() / ".cache" / "arbiter" / "reward-state.sqlite"),
        description="SQLite file keeping running reward statistics across restarts (empty: memory only)",
    )
    reward_window: int = Field(2048, gt=0, description="items in each spec's telemetry window")
    reward_canaries: str | None = Field(
        None, description="a preference file of canary pairs, scored through every spec on a schedule"
    )
    reward_canary_interval_s: float = Field(300.0, gt=0, description="seconds between canary measurements")
    annotation_db: str | None = Field(
        DEFAULT_STORE_URL,
        description="the preference store: sqlite:///FILE or postgresql://USER@HOST/DB (empty: annotation off)",
    )
    annotation_migrate: bool = Field(
        True, description="upgrade the store's schema at start (off: run `arbiter db upgrade` yourself)"
    )
    annotators_per_task: int = Field(1, ge=1, description="annotations wanted per task unless its upload says")
    assignment_ttl_s: float = Field(1800.0, gt=0, description="seconds before an abandoned assignment is freed")
    annotation_edit_window_s: float = Field(900.0, ge=0, description="seconds an annotator may edit a submission")
    auth: Literal["auto", "on", "off"] = Field(
        "auto", description="API keys required: on, off, or auto (off when host is loopback, on otherwise)"
    )
    api_keys_file: str | None = Field(None, description="a YAML/JSON file of API keys (hashes, scopes, limits)")
    api_keys: SecretStr | None = Field(None, description="the same list as text, e.g. from a Secret")
    rate_limit_rps: float = Field(0.0, ge=0, description="requests/s per key (or per client with auth off); 0: none")
    rate_limit_burst: int = Field(
        0, ge=0, description="requests per window of burst/rps seconds per key (0: twice the rate, a 2 s window)"
    )
    redis_url: str | None = Field(None, description="redis://host:6379/0 to share rate limits between replicas")
    cors_origins: list[str] = Field(default_factory=list, description="origins browsers may call from")
    allowed_hosts: list[str] = Field(
        default_factory=list, description="with auth off: Host names served besides loopback ones (DNS rebinding)"
    )
    admin_open: bool = Field(
        False, description="with auth off: admin operations without a key (off: they need an admin-scope key)"
    )
    shutdown_drain_s: float = Field(
        0.0, ge=0, description="on SIGTERM: seconds of serving while not ready, for load balancers to notice"
    )
    shutdown_grace_s: float = Field(30.0, gt=0, description="then: seconds for requests in flight to finish")
    annotation_rm_pairs: int = Field(
        500, ge=0, description="latest human preferences scored by the reward model for the agreement statistic"
    )

    def part(self, policy: type[P]) -> P:
        """The small policy object a module takes (a dataclass whose fields are settings of the same names), so
        that each module gets what it uses rather than the whole settings."""
        return policy(**{f.name: getattr(self, f.name) for f in dataclasses.fields(policy)})

    def loggable(self) -> dict[str, object]:
        """The settings as the start-up log shows them: secrets masked, passwords out of URLs."""
        from sqlalchemy.engine import make_url

        shown = self.model_dump()
        for name in ("annotation_db", "redis_url"):
            if shown[name]:
                shown[name] = make_url(shown[name]).render_as_string(hide_password=True)
        return shown

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: object) -> ServerSettings:
        """File values sit under the environment; flags given on the command line win over both."""
        file_values = (yaml.safe_load(Path(config_file).read_text()) or {}) if config_file else {}
        from_environment = cls()  # reads ARBITER_*; model_fields_set says which ones were given
        environment = {name: getattr(from_environment, name) for name in from_environment.model_fields_set}
        flags = {k: v for k, v in overrides.items() if v is not None}
        return cls.model_validate({**file_values, **environment, **flags})
