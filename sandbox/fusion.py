"""SandboxFusion's HTTP API (`POST /run_code`), for running code on an existing sandbox cluster at scale rather
than on the reward server. Requests follow its documented shape:

    {"code", "language": "python", "run_timeout", "memory_limit_MB", "stdin"}
    -> {"status": "Success" | "Failed" | "SandboxError", "message", "run_result": {"status": "Finished" |
        "TimeLimitExceeded" | "Error", "execution_time", "return_code", "stdout", "stderr"}}

Calls in flight are capped (`slots`), and each has a client-side deadline past the run's own limit, since a
sandbox under load can hang (SandboxFusion issue 33). A sandbox error, or no answer, raises SandboxFailed: the
code verifier reports `error` and the spec masks the item.
"""

from __future__ import annotations

import asyncio

import httpx

from arbiter.sandbox.base import Run, SandboxFailed, SandboxLimits, SandboxUnavailable

MARGIN_S = 10.0  # beyond the run's own limit: the cluster's queueing and start-up


class SandboxFusionSandbox:
    def __init__(self, url: str | None, slots: int = 4) -> None:
        if not url:
            raise SandboxUnavailable("the sandbox_fusion backend needs sandbox_url (http://host:8080)")
        self.url = url.rstrip("/")
        self._slots = slots
        self._limit: asyncio.Semaphore | None = None  # made in the loop that uses it
        self._http: httpx.AsyncClient | None = None
        self.in_flight = 0

    async def run(self, program: str, stdin: str = "", limits: SandboxLimits | None = None) -> Run:
        limits = limits or SandboxLimits()
        if self._limit is None or self._http is None:
            self._limit = asyncio.Semaphore(self._slots)
            # Connection failures are retried by the transport; a run is never sent twice once it reached the server.
            self._http = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(retries=2))
        body = {
            "code": program,
            "language": "python",
            "run_timeout": limits.wall_s,
            "memory_limit_MB": limits.memory_mb,
            "stdin": stdin,
        }
        async with self._limit:
            self.in_flight += 1
            try:
                answer = await self._http.post(f"{self.url}/run_code", json=body, timeout=limits.wall_s + MARGIN_S)
            except httpx.HTTPError as exc:
                raise SandboxFailed(f"SandboxFusion at {self.url} did not answer: {exc!r}") from exc
            finally:
                self.in_flight -= 1
        try:
            data = answer.json()
        except ValueError:
            data = None
        if not isinstance(data, dict) or data.get("status") not in ("Success", "Failed"):
            why = data.get("message") if isinstance(data, dict) else answer.text[:300]
            raise SandboxFailed(f"SandboxFusion answered {answer.status_code}: {why}")
        result = data.get("run_result") or {}
        timed_out = result.get("status") == "TimeLimitExceeded"
        code = result.get("return_code")
        return Run(
            exit_code=code if isinstance(code, int) else None,
            signal=None,
            stdout=str(result.get("stdout") or "")[: limits.output_bytes],
            stderr=str(result.get("stderr") or "")[: limits.output_bytes],
            timed_out=timed_out,
            output_truncated=len(str(result.get("stdout") or "")) > limits.output_bytes,
            wall_s=float(result.get("execution_time") or 0.0),
        )
