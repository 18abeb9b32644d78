"""Prometheus metrics, in a registry of the server's own (several servers can live in one test process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from arbiter.service.runtime.batcher import BatchStats

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
JUDGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
SCORE_BUCKETS = (-8, -4, -2, -1, -0.5, 0, 0.5, 1, 2, 4, 8)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("arbiter_requests", "Requests by route and status", ["route", "status"], registry=r)
        self.latency = Histogram(
            "arbiter_request_seconds", "Request latency", ["route"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.queue_depth = Gauge("arbiter_queue_depth", "Sequences waiting to be batched", ["model"], registry=r)
        self.batch_size = Histogram(
            "arbiter_batch_size", "Sequences per batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r
        )
        self.batch_tokens = Histogram(
            "arbiter_batch_tokens", "Padded tokens per batch", buckets=(64, 256, 1024, 4096, 16384, 65536), registry=r
        )
        self.batch_seconds = Histogram(
            "arbiter_batch_seconds", "Inference time per batch", buckets=LATENCY_BUCKETS, registry=r
        )
        self.tokens = Counter("arbiter_tokens_scored", "Real (unpadded) tokens scored", registry=r)
        self.dropped = Counter(
            "arbiter_sequences_dropped", "Queued sequences dropped unrun (caller gone, deadline passed)", registry=r
        )
        self.scores = Histogram("arbiter_score", "Raw scores returned", ["model"], buckets=SCORE_BUCKETS, registry=r)
        self.load_seconds = Gauge("arbiter_model_load_seconds", "Time to load and warm up", ["model"], registry=r)
        self.judge_latency = Histogram(
            "arbiter_judge_seconds", "Judge request latency", ["mode"], buckets=JUDGE_BUCKETS, registry=r
        )
        self.judge_errors = Counter("arbiter_judge_errors", "Judge backend failures by kind", ["kind"], registry=r)
        self.judge_verdicts = Counter(
            "arbiter_judge_verdicts", "Per-principle verdicts, from the cache or not", ["mode", "cached"], registry=r
        )
        self.judge_cache = Gauge(
            "arbiter_judge_cache_lookups", "Verdict cache lookups by result", ["result"], registry=r
        )
        self.judge_position_inconsistent = Counter(
            "arbiter_judge_pairwise",
            "Pairwise verdicts by whether the two orders disagreed",
            ["inconsistent"],
            registry=r,
        )

        self.verifications = Counter(
            "arbiter_verifications", "Verifier verdicts by verifier and status", ["verifier", "status"], registry=r
        )
        self.verification_seconds = Histogram(
            "arbiter_verification_seconds",
            "Time per verification, waiting in the pool included",
            ["verifier"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

        self.sandbox_in_flight = Gauge("arbiter_sandbox_runs_in_flight", "Programs running in the sandbox", registry=r)

    def observe_batch(self, stats: BatchStats) -> None:
        self.batch_size.observe(stats.size)
        self.batch_tokens.observe(stats.padded_tokens)
        self.batch_seconds.observe(stats.seconds)
        self.tokens.inc(stats.real_tokens)

    def observe_dropped(self, sequences: int) -> None:
        self.dropped.inc(sequences)
