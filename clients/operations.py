"""Every operation the server offers, declared once: its HTTP route and/or RPC, the scope a key needs for it, and the
limits it is held to. The HTTP access middleware, the gRPC servicer and interceptor, and the client all read this
table; a route or RPC that is not in it is refused when auth is on, and a test fails on any that the server
exposes without an entry here.

Scopes: `score` (reward models, specs), `judge` (the LLM judge, wherever it is reached from: a judge model name on
/v1/score or a spec with a judge component needs it too), `annotate` (the preference store; annotators' own keys
work there as well) and `admin`. `open` operations (probes, metrics, API docs, the annotation pages' files) need
no key.

Limits, by the setting that sets each one:
- `rate`: the caller's token bucket (`rate_limit_rps`/`rate_limit_burst` or the key's own `rate_limit`); one token
  per request, and per message on a stream.
- `body`: `max_body_bytes`, the request body (or gRPC message) size.
- `items`: `max_items`, items per request (pairs for compare, responses for rank).
- `tokens`: `max_request_tokens`, tokens per request after truncation, counted before anything is queued.
- `judge_chars`: `judge_max_chars`, characters per judged item (prompt and responses), before the backend is called.
- `text`: every string field of the wire models is capped at `MAX_TEXT_CHARS` characters (protocol.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

Scope = Literal["score", "judge", "annotate", "admin"]
SCOPES: tuple[Scope, ...] = ("score", "judge", "annotate", "admin")
Access = Scope | Literal["open"]
Limit = Literal["rate", "body", "items", "tokens", "judge_chars", "text"]
LIMITS: tuple[Limit, ...] = ("rate", "body", "items", "tokens", "judge_chars", "text")
GRPC_SERVICE = "arbiter.v1.RewardService"

_PARAMETER = re.compile(r"\{(\w+)(:path)?\}")


@dataclass(frozen=True)
class Operation:
    name: str
    scope: Access
    limits: frozenset[Limit]
    method: str | None = None  # HTTP, with `path`
    path: str | None = None  # a template: {name} is one path segment, {name:path} the rest of the path
    rpc: str | None = None  # the full gRPC method, /package.Service/Method
    annotators: bool = False  # also takes annotators' own keys, which the preference store checks
    _pattern: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.path is not None:
            parts, last = [], 0
            for m in _PARAMETER.finditer(self.path):
                parts += [re.escape(self.path[last : m.start()]), ".+" if m.group(2) else "[^/]+"]
                last = m.end()
            object.__setattr__(self, "_pattern", re.compile("".join([*parts, re.escape(self.path[last:])]) + "$"))

    def matches(self, method: str, path: str) -> bool:
        return self._pattern is not None and self.method == method and self._pattern.match(path) is not None

    def url(self, **parameters: object) -> str:
        """The route's path with its parameters filled in (what the client sends)."""
        assert self.path is not None, f"{self.name} has no HTTP route"
        return _PARAMETER.sub(lambda m: str(parameters[m.group(1)]), self.path)


def _rpc(method: str, service: str = GRPC_SERVICE) -> str:
    return f"/{service}/{method}"


SCORING: frozenset[Limit] = frozenset({"rate", "body", "items", "tokens", "judge_chars", "text"})
READING: frozenset[Limit] = frozenset({"rate"})
WRITING: frozenset[Limit] = frozenset({"rate", "body", "text"})
NONE: frozenset[Limit] = frozenset()

SCORE = Operation("score", "score", SCORING, "POST", "/v1/score", _rpc("Score"))
SCORE_STREAM = Operation("score_stream", "score", SCORING, rpc=_rpc("ScoreStream"))
COMPARE = Operation("compare", "score", SCORING, "POST", "/v1/compare", _rpc("Compare"))
RANK = Operation("rank", "score", SCORING, "POST", "/v1/rank", _rpc("Rank"))
MODELS = Operation("models", "score", READING, "GET", "/v1/models", _rpc("ListModels"))
MODEL = Operation("model", "score", READING, "GET", "/v1/models/{name}")
REWARD = Operation("reward", "score", SCORING, "POST", "/v1/reward", _rpc("Reward"))
REWARD_SPECS = Operation("reward_specs", "score", READING, "GET", "/v1/reward-specs")
REWARD_SPEC_STATS = Operation("reward_spec_stats", "score", READING, "GET", "/v1/reward-specs/{name}/stats")
GET_REWARD = Operation("get_reward", "score", SCORING, "POST", "/get_reward")  # OpenRLHF's remote reward model
REWARD_SAMPLE = Operation("reward_sample", "score", SCORING, "POST", "/v1/reward/sample")  # slime's remote_rm
# The engines' protocols (clients/engines.py), for trainers that speak them: vLLM, TEI, SGLang's reward models.
ENGINE_CLASSIFY = Operation("engine_classify", "score", SCORING, "POST", "/classify")
ENGINE_POOLING = Operation("engine_pooling", "score", SCORING, "POST", "/pooling")
ENGINE_PREDICT = Operation("engine_predict", "score", SCORING, "POST", "/predict")
ENGINE_EMBEDDINGS = Operation("engine_embeddings", "score", SCORING, "POST", "/v1/embeddings")
JUDGE = Operation("judge", "judge", SCORING, "POST", "/v1/judge", _rpc("Judge"))
CONSTITUTIONS = Operation("constitutions", "judge", READING, "GET", "/v1/constitutions")
ADMIN_RELOAD = Operation("admin_reload", "admin", WRITING, "POST", "/v1/admin/reload")
ADMIN_MODELS = Operation("admin_models", "admin", WRITING, "POST", "/v1/admin/models")


def _annotation(name: str, method: str, path: str) -> Operation:
    limits = READING if method == "GET" else WRITING
    return Operation(name, "annotate", limits, method, "/v1/annotation" + path, annotators=True)


ANNOTATION_ME = _annotation("annotation_me", "GET", "/me")
ANNOTATION_ANNOTATORS = _annotation("annotation_annotators", "POST", "/annotators")
ANNOTATION_TASKS = _annotation("annotation_tasks", "POST", "/tasks")
ANNOTATION_NEXT = _annotation("annotation_next", "POST", "/next")
ANNOTATION_SKIP = _annotation("annotation_skip", "POST", "/tasks/{task_id}/skip")
ANNOTATION_SUBMIT = _annotation("annotation_submit", "POST", "/tasks/{task_id}/annotations")
ANNOTATION_EDIT = _annotation("annotation_edit", "PATCH", "/annotations/{annotation_id}")
ANNOTATION_EXPORT = _annotation("annotation_export", "GET", "/export")
ANNOTATION_STATS = _annotation("annotation_stats", "GET", "/stats")
ANNOTATION_AUDIT = _annotation("annotation_audit", "GET", "/audit")

_HEALTH = "grpc.health.v1.Health"
_REFLECTION = ("grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection")
OPEN = (
    Operation("healthz", "open", NONE, "GET", "/healthz"),
    Operation("health", "open", NONE, "GET", "/health"),  # the engines' liveness probe
    Operation("readyz", "open", NONE, "GET", "/readyz"),
    Operation("metrics", "open", NONE, "GET", "/metrics"),
    Operation("openapi", "open", NONE, "GET", "/openapi.json"),
    Operation("docs", "open", NONE, "GET", "/docs"),
    Operation("docs_oauth2_redirect", "open", NONE, "GET", "/docs/oauth2-redirect"),
    Operation("redoc", "open", NONE, "GET", "/redoc"),
    Operation("annotate_page", "open", NONE, "GET", "/annotate"),
    Operation("overview_page", "open", NONE, "GET", "/annotate/overview"),
    Operation("annotate_static", "open", NONE, "GET", "/annotate/static/{file:path}"),
    Operation("grpc_health_check", "open", NONE, rpc=_rpc("Check", _HEALTH)),
    Operation("grpc_health_watch", "open", NONE, rpc=_rpc("Watch", _HEALTH)),
    Operation("grpc_health_list", "open", NONE, rpc=_rpc("List", _HEALTH)),
    *(
        Operation(f"grpc_reflection_{s.split('.')[2]}", "open", NONE, rpc=_rpc("ServerReflectionInfo", s))
        for s in _REFLECTION
    ),
)

OPERATIONS: tuple[Operation, ...] = (
    SCORE,
    SCORE_STREAM,
    COMPARE,
    RANK,
    MODELS,
    MODEL,
    REWARD,
    REWARD_SPECS,
    REWARD_SPEC_STATS,
    GET_REWARD,
    REWARD_SAMPLE,
    ENGINE_CLASSIFY,
    ENGINE_POOLING,
    ENGINE_PREDICT,
    ENGINE_EMBEDDINGS,
    JUDGE,
    CONSTITUTIONS,
    ADMIN_RELOAD,
    ADMIN_MODELS,
    ANNOTATION_ME,
    ANNOTATION_ANNOTATORS,
    ANNOTATION_TASKS,
    ANNOTATION_NEXT,
    ANNOTATION_SKIP,
    ANNOTATION_SUBMIT,
    ANNOTATION_EDIT,
    ANNOTATION_EXPORT,
    ANNOTATION_STATS,
    ANNOTATION_AUDIT,
    *OPEN,
)
_BY_RPC = {op.rpc: op for op in OPERATIONS if op.rpc}


def http_operation(method: str, path: str) -> Operation | None:
    """The operation a request is for; HEAD is answered as GET. None: not a declared route."""
    method = "GET" if method == "HEAD" else method
    return next((op for op in OPERATIONS if op.matches(method, path)), None)


def rpc_operation(method: str) -> Operation | None:
    """The operation of a full gRPC method name (/package.Service/Method); None: not declared."""
    return _BY_RPC.get(method)
