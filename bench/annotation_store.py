"""The preference store under a crowd: one `arbiter serve`, real preference pairs uploaded as tasks, and N annotators
(threads, each its own HTTP client) taking tasks and submitting answers as fast as the server lets them. The same
run on the SQLite default and on this machine's PostgreSQL, so the two are measured side by side:
  upload      tasks/s of POST /v1/annotation/tasks (chunks of 500)
  annotate    annotations/s over all annotators; p50/p99 of "next task" and of "submit"
  export      rows/s of GET /v1/annotation/export
Every task wants two annotators, so the assignment rules are exercised; the run checks that each task got exactly
two annotations at the end.

    python bench/annotation_store.py --bundle bundles/default --annotators 8 --tasks 400
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from tempfile import TemporaryDirectory

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from arbiter.annotation.store import AnnotationStore  # noqa: E402
from tests.databases import fresh_database  # noqa: E402
from tests.server import running_server  # noqa: E402

PREFERENCES = ROOT.parent / "shared" / "data" / "preferences" / "hh_rlhf_harmless.jsonl"


def percentiles(seconds: list[float]) -> tuple[float, float]:
    return 1e3 * statistics.median(seconds), 1e3 * float(np.percentile(seconds, 99))


def run(kind: str, bundle: Path, annotators: int, tasks: int) -> dict[str, float]:
    pairs = [json.loads(line) for line in PREFERENCES.open()][:tasks]
    specs = [{"prompt": p["prompt"], "responses": [p["chosen"], p["rejected"]], "annotators": 2} for p in pairs]
    with TemporaryDirectory() as folder, fresh_database(kind, Path(folder)) as db:
        lead = AnnotationStore.open(db).add_annotator("lead", "lead").key
        flags = ["--bundles", str(bundle), "--annotation-db", db, "--judge-backend", "off", "--grpc-port", "0"]
        with running_server(Path(folder), *flags) as server:
            http = httpx.Client(base_url=server.url, timeout=120, headers={"Authorization": f"Bearer {lead}"})
            start = time.perf_counter()
            for i in range(0, len(specs), 500):
                http.post("/v1/annotation/tasks", json={"tasks": specs[i : i + 500]}).raise_for_status()
            upload = len(specs) / (time.perf_counter() - start)
            keys = [
                http.post("/v1/annotation/annotators", json={"name": f"a{i}"}).json()["key"] for i in range(annotators)
            ]
            chosen = {p["chosen"] for p in pairs}
            nexts: list[float] = []
            submits: list[float] = []

            def annotate(key: str) -> int:
                done = 0
                with httpx.Client(base_url=server.url, timeout=120, headers={"Authorization": f"Bearer {key}"}) as me:
                    while True:
                        t0 = time.perf_counter()
                        r = me.post("/v1/annotation/next")
                        nexts.append(time.perf_counter() - t0)
                        if r.status_code == 204:
                            return done
                        view = r.json()
                        label = next((x["label"] for x in view["responses"] if x["text"] in chosen), "A")
                        t0 = time.perf_counter()
                        saved = me.post(
                            f"/v1/annotation/tasks/{view['task_id']}/annotations",
                            json={"choice": label, "strength": "better"},
                        )
                        submits.append(time.perf_counter() - t0)
                        saved.raise_for_status()
                        done += 1

            start = time.perf_counter()
            with ThreadPoolExecutor(annotators) as pool:
                done = sum(pool.map(annotate, keys))
            annotate_s = time.perf_counter() - start
            stats = http.get("/v1/annotation/stats").json()
            assert done == 2 * len(specs) and stats["tasks"]["complete"] == len(specs), (done, stats["tasks"])
            start = time.perf_counter()
            rows = http.get("/v1/annotation/export").text.count("\n")
            export = rows / (time.perf_counter() - start)
            next_p50, next_p99 = percentiles(nexts)
            submit_p50, submit_p99 = percentiles(submits)
            http.close()
    return {
        "upload_tasks_per_s": upload,
        "annotations_per_s": done / annotate_s,
        "next_p50_ms": next_p50,
        "next_p99_ms": next_p99,
        "submit_p50_ms": submit_p50,
        "submit_p99_ms": submit_p99,
        "export_rows_per_s": export,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=ROOT / "bundles" / "default")
    parser.add_argument("--annotators", type=int, default=8)
    parser.add_argument("--tasks", type=int, default=400)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "annotation_store.json")
    args = parser.parse_args()
    results = {kind: run(kind, args.bundle, args.annotators, args.tasks) for kind in ("sqlite", "postgresql")}
    names = list(results["sqlite"])
    print(f"{args.annotators} annotators, {args.tasks} tasks x 2 annotations, one server")
    print(f"{'':22}{'sqlite':>12}{'postgresql':>12}{'pg/sqlite':>11}")
    for name in names:
        a, b = results["sqlite"][name], results["postgresql"][name]
        print(f"{name:22}{a:12.1f}{b:12.1f}{b / a:10.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"annotators": args.annotators, "tasks": args.tasks, **results}, indent=2))


if __name__ == "__main__":
    main()
