"""The effect of each choice in the default recipe: configs/default.yaml, then each ablation in configs/ablations/.

Every ablation is a few settings laid over the default (one choice undone or changed). Each is
trained and evaluated on a development split that never touches the held-out split the default bundle reports: the
prompts that `arbiter train` holds out (eval_fraction 0.1 of each file) are dropped first, and the next tenth of the
prompt-hash range is the development set. So the recipe is chosen without looking at the numbers it is judged by.

    python bench/recipes.py [--only default pooling_first_token] [--out bench/results/recipes]

Prints and writes (recipes.md, recipes.json) per recipe: accuracy per file, the share of "longer response wins" by
the labels and by the model per file, and the wall time of the run on this machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml

from arbiter.bundle.manifest import Evaluation, SourceEvaluation
from arbiter.data.load import load_source
from arbiter.data.sources import SourceSpec
from arbiter.text_table import text_table
from arbiter.training.config import TrainConfig
from arbiter.training.split import is_eval
from arbiter.training.train import train

ROOT = Path(__file__).resolve().parents[1]
HELD_OUT = 0.1  # what the default bundle's own eval split is: never trained on, never looked at here
DEVELOPMENT = 0.2  # prompts in [HELD_OUT, DEVELOPMENT) of the hash range evaluate the recipes


def development_files(sources: list[Path], folder: Path) -> list[SourceSpec]:
    """Each file less its held-out prompts, so that eval_fraction DEVELOPMENT leaves exactly the development set."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for path in sources:
        groups, _ = load_source(SourceSpec(path=str(path)))
        target = folder / f"{path.stem}.jsonl"
        rows = [g.to_row() for g in groups if not is_eval(g, HELD_OUT)]
        target.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        out.append(SourceSpec(path=str(target)))
    return out


def recipes(only: list[str] | None) -> dict[str, dict[str, object]]:
    default = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    found = {"default": default}
    for path in sorted((ROOT / "configs" / "ablations").glob("*.yaml")):
        found[path.stem] = {**default, **(yaml.safe_load(path.read_text()) or {})}
    return {name: r for name, r in found.items() if not only or name in only}


def run_recipe(name: str, raw: dict[str, object], data: list[SourceSpec], out: Path) -> dict[str, object]:
    config = TrainConfig.model_validate({**raw, "data": data, "eval_fraction": DEVELOPMENT, "out": out / name})
    started = time.perf_counter()
    run = train(config)
    seconds = time.perf_counter() - started
    evaluation = Evaluation.model_validate_json((run / "evaluation.json").read_text())
    return {"seconds": seconds, "evaluation": evaluation.model_dump()}


def table(results: dict[str, dict[str, object]]) -> str:
    """Per recipe and file: accuracy [95% interval], then "longer wins" by the labels / by the model."""
    evaluations = {name: Evaluation.model_validate(r["evaluation"]) for name, r in results.items()}
    sources = sorted({s for e in evaluations.values() for s in e.by_source})
    rows: list[list[object]] = [["recipe", *sources, "all", *(f"longer wins {s}" for s in sources), "wall s"]]
    for name, e in evaluations.items():
        cells = [e.by_source.get(s) for s in sources]
        accuracy = [_accuracy(c) for c in [*cells, e.overall]]
        longer = [_longer(c) for c in cells]
        rows.append([name, *accuracy, *longer, f"{results[name]['seconds']:.0f}"])
    return text_table(rows)


def _accuracy(r: SourceEvaluation | None) -> str:
    if r is None:
        return "-"
    return f"{r.accuracy:.3f} [{r.accuracy_low:.2f}, {r.accuracy_high:.2f}]"


def _longer(r: SourceEvaluation | None) -> str:
    if r is None or r.labels_prefer_longer is None or r.model_prefers_longer is None:
        return "-"
    return f"{100 * r.labels_prefer_longer:.0f}% / {100 * r.model_prefers_longer:.0f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data", type=Path, nargs="+", default=sorted((ROOT.parent / "shared/data/preferences").glob("*.jsonl"))
    )
    parser.add_argument("--only", nargs="+", help="recipe names (default, or a file stem in configs/ablations)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "recipes")
    args = parser.parse_args()
    data = development_files(args.data, args.out / "development-data")
    results = {}
    for name, raw in recipes(args.only).items():
        print(f"== {name}: {json.dumps({k: v for k, v in raw.items() if k != 'name'})}", flush=True)
        results[name] = run_recipe(name, raw, data, args.out / "runs")
        print(table(results), flush=True)
    (args.out / "recipes.json").write_text(json.dumps(results, indent=2))
    (args.out / "recipes.md").write_text("```\n" + table(results) + "\n```\n")
    print(f"wrote {args.out / 'recipes.md'}")


if __name__ == "__main__":
    main()
