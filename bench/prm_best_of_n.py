"""Process reward models on GSM8K's real model solutions, through one server, in one run on this machine.

(a) Best-of-N on the questions the PRM held out (the eval data its bundle names): how often the solution picked by
    the PRM (by each aggregate), by an outcome reward model (--orm), by the `math` verifier and by random choice is
    correct, with bootstrap 95% intervals over questions, and the oracle. Then the PRM's first-wrong-step
    precision and recall against the arithmetic labels (data/arithmetic_steps.py), from the served step scores.
(b) Cost: the same solutions scored by the PRM step by step (one forward pass each), against the same PRM reading
    each solution as one step (an outcome request of the same text, the same model and server), and against one
    request per step prefix (what a score per step costs with an outcome model). Requests of 8 solutions, one at a
    time; the median of --repeats passes; ratios from the same run.

  python bench/prm_best_of_n.py --prm bundles/prm --orm bundles/default --out bench/results/prm_best_of_n.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from arbiter.bundle import load_bundle
from arbiter.data.sources import SourceSpec
from arbiter.data.steps import load_stepwise
from arbiter.text_table import text_table
from arbiter.training.best_of_solutions import Question, best_of_solutions
from arbiter.training.step_metrics import format_step_metrics, step_metrics

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.server import free_port, server_process  # noqa: E402  (the same launcher the tests use)

GSM8K = ROOT.parent / "shared" / "data" / "verifiable" / "gsm8k_model_solutions.jsonl"
PER_REQUEST = 8
AGGREGATES = ("min", "last", "product", "mean")


def steps_of(solution: str) -> list[str]:
    """A GSM8K solution's steps as the PRM was trained on them: its non-empty lines (data/arithmetic_steps.py)."""
    return [line for line in solution.splitlines() if line.strip()]


def held_out_questions(eval_path: Path) -> tuple[list[Question], list[str]]:
    """Every graded solution of the questions in the PRM's eval data, and the GSM8K answers, in the same order."""
    examples, _ = load_stepwise(SourceSpec(path=str(eval_path)))
    wanted = {e.prompt for e in examples if isinstance(e.prompt, str)}
    questions, answers = [], []
    for line in GSM8K.read_text().splitlines():
        row = json.loads(line)
        if row["question"] not in wanted:
            continue
        graded = [s for s in row["solutions"] if isinstance(s.get("is_correct"), bool) and steps_of(s["solution"])]
        if len(graded) >= 2:
            questions.append(Question(row["question"], tuple(s["solution"] for s in graded),
                                      tuple(s["is_correct"] for s in graded)))  # fmt: skip
            answers.append(str(row["answer"]))
    return questions, answers


def post(http: httpx.Client, route: str, body: dict[str, object]) -> dict:
    answer = http.post(route, json=body, timeout=120)
    assert answer.status_code == 200, answer.text
    return answer.json()


def scores_of(http: httpx.Client, route: str, field: str, bodies: list[dict[str, object]]) -> np.ndarray:
    return np.concatenate([np.array(post(http, route, body)[field]) for body in bodies])


def chunks(items: list, size: int = PER_REQUEST) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def prm_steps(http: httpx.Client, prompts: list[str], steps: list[list[str]]) -> list[dict]:
    out: list[dict] = []
    for part in chunks(list(zip(prompts, steps, strict=True))):
        body = {"model": "prm", "items": [{"prompt": p, "steps": s} for p, s in part]}
        out += post(http, "/v1/score", body)["steps"]
    return out


def timed(run: object, repeats: int) -> float:
    assert callable(run)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--prm", type=Path, required=True, help="a PRM bundle (arbiter export of a --objective prm run)"
    )
    parser.add_argument("--orm", type=Path, default=None, help="an outcome reward model's bundle to compare with")
    parser.add_argument("--cost-solutions", type=int, default=128, help="solutions in each cost pass")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    evaluation = load_bundle(args.prm).manifest.step_evaluation
    if evaluation is None or not Path(evaluation.data).is_file():
        sys.exit(f"{args.prm}: not a PRM bundle whose eval data is on this machine (step_evaluation.data)")
    questions, answers = held_out_questions(Path(evaluation.data))
    prompts = [q.question for q in questions for _ in q.solutions]
    solutions = [s for q in questions for s in q.solutions]
    steps = [steps_of(s) for s in solutions]
    counts = [len(s) for s in steps]
    print(f"workload: {len(questions)} held-out GSM8K questions, {len(solutions)} solutions; steps per solution "
          f"min/median/max {min(counts)}/{int(statistics.median(counts))}/{max(counts)}; characters median "
          f"{int(statistics.median(len(s) for s in solutions))}")  # fmt: skip

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    bundles = ["--bundles", f"prm={args.prm}"] + (["--bundles", f"orm={args.orm}"] if args.orm else [])
    command = [sys.executable, "-m", "arbiter.cli", "serve", "--port", str(port), "--grpc-port", "0", *bundles,
               "--judge-backend", "off", "--reward-state-path", "", "--annotation-db", "",
               "--max-items", "4096"]  # fmt: skip
    log = ROOT / "bench" / "results" / "logs" / "prm-server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, object] = {"questions": len(questions), "solutions": len(solutions)}
    with server_process(command, log, url + "/readyz"), httpx.Client(base_url=url) as http:
        read = prm_steps(http, prompts, steps)
        pickers: dict[str, np.ndarray] = {f"PRM, {how}": np.array([r[how] for r in read]) for how in AGGREGATES}
        if args.orm:
            pickers["outcome RM"] = scores_of(http, "/v1/score", "scores", [
                {"model": "orm", "items": [{"prompt": p, "response": s} for p, s in part]}
                for part in chunks(list(zip(prompts, solutions, strict=True)))])  # fmt: skip
        labels = [a for q, a in zip(questions, answers, strict=True) for _ in q.solutions]
        pickers["math verifier"] = scores_of(http, "/v1/reward", "rewards", [
            {"spec": "math", "items": [{"prompt": p, "response": s, "label": a} for p, s, a in part]}
            for part in chunks(list(zip(prompts, solutions, labels, strict=True)))])  # fmt: skip
        rows: list[list[object]] = [["picked by", "correct", "95% interval"]]
        best: dict[str, object] = {}
        for name, scores in pickers.items():
            report = best_of_solutions(questions, lambda _p, _r, s=scores: s)
            hit = report["reward_model"]
            best[name] = report
            rows.append([name, f"{hit['accuracy']:.3f}", f"[{hit['accuracy_low']:.3f}, {hit['accuracy_high']:.3f}]"])
        rows += [
            ["random choice", f"{report['random']:.3f}", ""],
            ["oracle (any correct)", f"{report['oracle']:.3f}", ""],
        ]
        print(f"best of {report['solutions_per_question']:.1f} over {len(questions)} questions:\n{text_table(rows)}")
        results["best_of_n"] = best

        # First wrong step: the labelled held-out solutions, read by the served PRM.
        examples, _ = load_stepwise(SourceSpec(path=evaluation.data))
        served = prm_steps(http, [str(e.prompt) for e in examples], [list(e.steps) for e in examples])
        metrics = step_metrics(examples, [np.array(r["probabilities"]) for r in served])
        print(format_step_metrics(metrics))
        results["steps"] = metrics

        # Cost: the same solutions, the same model and server.
        # Solutions read whole (every step within max_length), so that the outcome request reads the same text.
        whole = [(p, s) for p, s, r in zip(prompts, steps, read, strict=True) if len(r["probabilities"]) == len(s)]
        sample = whole[: args.cost_solutions]
        prefixes = [(p, s[: k + 1]) for p, s in sample for k in range(len(s))]

        def step_pass() -> None:
            prm_steps(http, [p for p, _ in sample], [s for _, s in sample])

        def outcome_pass(items: list[tuple[str, list[str]]]) -> None:
            for part in chunks(items):  # no step mark in the text: the whole solution is one step, one score
                post(http, "/v1/score", {"model": "prm", "items": [{"prompt": p, "response": "\n".join(s)}
                                                                   for p, s in part]})  # fmt: skip

        step_pass(), outcome_pass(sample)  # warm-up
        seconds = {
            "steps, one pass per solution": timed(step_pass, args.repeats),
            "outcome request, same text": timed(lambda: outcome_pass(sample), args.repeats),
            "one request per step prefix": timed(lambda: outcome_pass(prefixes), args.repeats),
        }
    base = seconds["outcome request, same text"]
    cost = [["scoring", "solutions/s", "median s", "x outcome"]]
    cost += [[name, f"{len(sample) / s:.1f}", f"{s:.3f}", f"{s / base:.2f}"] for name, s in seconds.items()]
    print(f"cost over {len(sample)} solutions ({len(prefixes)} steps), requests of {PER_REQUEST}, median of "
          f"{args.repeats}:\n{text_table(cost)}")  # fmt: skip
    results["cost_seconds"] = seconds
    results["cost_ratio_steps_to_outcome"] = seconds["steps, one pass per solution"] / base
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
