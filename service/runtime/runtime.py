"""Everything one server process shares between its faces: settings, metrics, models, the reward logic."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from arbiter.bundle import BundleError
from arbiter.clients.protocol import LoadModelRequest, ModelList, RewardSpecList
from arbiter.errors import ArbiterError, InvalidInput, NotFound
from arbiter.judge.constitution import ConstitutionError
from arbiter.service.access.control import AccessControl, AccessPolicy
from arbiter.service.metrics import Metrics
from arbiter.service.runtime.admission import Limits
from arbiter.service.runtime.annotation import AnnotationPolicy, AnnotationService
from arbiter.service.runtime.engines import EngineService
from arbiter.service.runtime.health import Health
from arbiter.service.runtime.judging import JudgeService
from arbiter.service.runtime.models import ModelPolicy, ModelRegistry, ServedModel
from arbiter.service.runtime.pipelines import RewardPipelines, SpecPolicy, read_canaries
from arbiter.service.runtime.remote import RemotePolicy
from arbiter.service.runtime.scoring import ScoringService
from arbiter.service.runtime.verifying import VerificationService, VerifierPolicy
from arbiter.service.settings import ServerSettings

log = logging.getLogger("arbiter.runtime")
RETIRE_AFTER_S = 30.0  # longer than any request holding a replaced model takes


class Runtime:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.health = Health()
        self.registry = ModelRegistry(
            settings.part(ModelPolicy), self.metrics, self.health, settings.part(RemotePolicy)
        )
        limits = settings.part(Limits)
        self.judging: JudgeService | None = None
        try:
            self.judging = JudgeService(settings, self.metrics, limits)
        except (ConstitutionError, NotFound, ValueError) as exc:  # a bad constitution: not ready, not a crash
            message = str(exc)
            self.health.fail("constitutions", message)
            log.error("judge not set up; the server stays not ready", extra={"reason": message})
        else:
            self.health.ok("constitutions")
        self.scoring = ScoringService(limits, self.registry, self.metrics, self.judging)
        self.engines = EngineService(limits, self.registry, self.metrics)
        self.verification = VerificationService(settings.part(VerifierPolicy), self.metrics)
        self.pipelines = RewardPipelines(
            settings.part(SpecPolicy), self.registry, self.judging, self.verification, self.metrics, limits
        )
        self.access = AccessControl(settings.part(AccessPolicy))
        if self.access.error:
            self.health.fail("api_keys", self.access.error)
        else:
            self.health.ok("api_keys")
        self.annotation = AnnotationService(settings.part(AnnotationPolicy), self.scoring, self.access)
        self._on_readiness: list[Callable[[bool], object]] = []
        self._background: set[asyncio.Future[None]] = set()
        self.shutting_down = False

    @property
    def ready(self) -> bool:
        return self.health.ready and not self.shutting_down

    def on_readiness(self, callback: Callable[[bool], object]) -> None:
        """Called with `ready` when loading ends and whenever readiness may change after (a reload, shutdown): the
        gRPC health service listens here."""
        self._on_readiness.append(callback)

    async def start(self) -> None:
        try:
            await self._load()
        except Exception as exc:  # a bug, or a failure nobody foresaw: reported, never left 'loading' forever
            log.exception("loading stopped; the server stays not ready")
            self.health.stopped(f"loading stopped: {type(exc).__name__}: {exc}")
        log.info("ready" if self.health.ready else "not ready", extra={"health": self.health.report()})
        self._announce()

    async def _load(self) -> None:
        # Loading runs in a thread so the faces answer (alive, not ready) while bundles load.
        await asyncio.to_thread(self.registry.load_all)
        for name, seconds in self.registry.load_seconds.items():
            self.metrics.load_seconds.labels(name).set(seconds)
        if self.registry.models:  # specs are checked against the models actually served
            self.pipelines.load()
            if self.settings.reward_canaries and self.pipelines.library is not None:
                self.pipelines.start_canaries(read_canaries(Path(self.settings.reward_canaries)))
        else:
            self.health.skip("reward_specs", "not checked: no model is served")
        await self._open_store()

    async def _open_store(self) -> None:
        """Opened now so the first annotator does not wait; down, it is reported and holds nothing back."""
        if not self.settings.annotation_db:
            self.health.off("store", "annotation is off (annotation_db is empty)")
            return
        try:
            await asyncio.to_thread(self.annotation.store)
        except ArbiterError as exc:  # logged where it happened; annotation routes answer 503 and retry
            self.health.fail("store", exc.message)
        else:
            self.health.ok("store")

    def _announce(self) -> None:
        for callback in self._on_readiness:
            result = callback(self.ready)
            if asyncio.iscoroutine(result):
                self._keep(asyncio.ensure_future(result))

    async def load_model(self, request: LoadModelRequest) -> ModelList:
        """Serves a new or retrained bundle without a restart. A replaced model keeps answering the requests that
        already hold it and is closed after a grace period."""
        try:
            model, replaced = await asyncio.to_thread(self.registry.open, request.bundle, request.name)
        except (BundleError, OSError, ValueError) as exc:
            raise InvalidInput(f"bundle {request.bundle!r} not loaded: {exc}") from exc
        if request.default:
            self.registry.default_name = model.name
        self.metrics.load_seconds.labels(model.name).set(self.registry.load_seconds[model.name])
        if replaced is not None:
            self._keep(asyncio.create_task(self._retire(replaced)))
        return self.scoring.models()

    async def _retire(self, model: ServedModel) -> None:
        await asyncio.sleep(RETIRE_AFTER_S)
        await asyncio.to_thread(model.close)  # runs what is still queued, then stops

    def reload(self) -> RewardSpecList:
        """SIGHUP and POST /v1/admin/reload: the API keys and the reward specs read again. What fails to load
        keeps what was in force (400)."""
        try:
            self.access.reload()
            self.health.ok("api_keys")
            return self.pipelines.reload()
        finally:
            self._announce()  # a failure at start may be mended now

    def begin_shutdown(self) -> None:
        """Readiness turns false on both faces (/readyz, the gRPC health service) while requests still run."""
        self.shutting_down = True
        self._announce()

    def _keep(self, task: asyncio.Future[None]) -> None:
        """Holds a background task until it is done (the loop keeps only weak references)."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def refresh_gauges(self) -> None:
        for name, model in list(self.registry.models.items()):  # a model may be loading in a thread
            self.metrics.queue_depth.labels(name).set(model.batcher.depth)
        if self.judging is not None:
            self.judging.refresh_gauges()
        self.pipelines.refresh_gauges()

    def close(self) -> None:
        self.pipelines.close()
        self.verification.close()
        self.annotation.close()
        self.registry.close()
