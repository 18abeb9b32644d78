"""AI feedback with the real local judge (SmolLM2-135M): `arbiter label` with an interrupted and resumed run, the
judge measured against human labels, and the RLAIF loop from judge labels to a served reward model."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from arbiter.clients.protocol import JudgeItem, JudgeRequest
from arbiter.data.load import load_source
from arbiter.data.sources import SourceSpec
from arbiter.judge.backends import open_backend
from arbiter.judge.cache import VerdictCache
from arbiter.judge.constitution import ConstitutionLibrary
from arbiter.judge.evaluation import evaluate_judge, format_table, write_json
from arbiter.judge.judging import Judge
from arbiter.judge.labeling import label_pairs, pair_id, read_pairs
from arbiter.judge.setup import JudgeSetup

ROOT = Path(__file__).resolve().parents[1]
PAIRS = [
    ("What is the capital of France?", "Paris.", "Berlin."),
    ("How many legs does a spider have?", "Eight.", "Six."),
    ("Say hello in Spanish.", "Hola.", "Bonjour."),
    ([{"role": "user", "content": "What is 2 + 2?"}], "4", "22"),
    ("Name a primary colour.", "Red.", "I would rather not say."),
    ("Is water wet?", "Water makes other things wet.", "No idea, ask someone else."),
]


@pytest.fixture(scope="module")
def backend():
    backend = open_backend("local", "smollm2")
    yield backend
    asyncio.run(backend.aclose())


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_label_writes_one_row_per_pair_and_resumes_after_an_interruption(tmp_path, backend):
    pairs_file = write_jsonl(
        tmp_path / "pairs.jsonl", [{"prompt": p, "response_a": a, "response_b": b} for p, a, b in PAIRS]
    )
    out = tmp_path / "labels.jsonl"
    command = [sys.executable, "-m", "arbiter.cli", "label", "--pairs", str(pairs_file), "--out", str(out)]
    command += ["--backend", "local", "--sampling", "sample", "--batch-size", "4", "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "labeled 6 of 6 pairs (skipped as already done 0)" in done.stdout

    first = read_jsonl(out)
    assert len(first) == 6
    by_id = {pair_id(p, a, b): (p, a, b) for p, a, b in PAIRS}
    for row in first:
        prompt, a, b = by_id[row["judge"]["id"]]
        assert row["prompt"] == prompt and {row["chosen"], row["rejected"]} == {a, b}
        assert 0.5 <= row["preference_strength"] <= 1
        p = row["judge"]["p_a"]
        assert row["preference_strength"] == pytest.approx(max(p, 1 - p))
        assert row["chosen"] == (a if p >= 0.5 else b)
        assert len(row["judge"]["principles"]) == 1  # sampling: one principle per pair
        assert row["judge"]["constitution"] == "default@1.0" and row["judge"]["model"] == "smollm2"
    groups, report = load_source(SourceSpec(path=str(out)))  # what `arbiter train` would read
    assert len(groups) == 6 - report.bad["tie"]

    # An interruption after two rows, the third cut mid-line: the rerun judges only the other four.
    lines = out.read_text().splitlines(keepends=True)
    out.write_text(lines[0] + lines[1] + lines[2][:40])
    cache = VerdictCache()
    judge = Judge(backend, ConstitutionLibrary(), cache)
    pairs = read_pairs(pairs_file)
    setup = JudgeSetup(sampling="sample", batch_size=4, progress=False)
    report = asyncio.run(label_pairs(judge, pairs, out, setup))
    assert (report.already_done, report.labeled) == (2, 4)
    assert cache.misses == 4  # one principle per pair: one verdict computed per pair judged
    final = read_jsonl(out)
    assert sorted(r["judge"]["id"] for r in final) == sorted(by_id)
    # Each pair is its own request, so a resumed run draws the same principle and reaches the same verdict.
    before = {r["judge"]["id"]: r for r in first}
    for row in final[2:]:
        old = before[row["judge"]["id"]]
        assert row["judge"]["principles"][0]["name"] == old["judge"]["principles"][0]["name"]
        assert row["judge"]["p_a"] == pytest.approx(old["judge"]["p_a"], abs=1e-5)

    # A rerun with everything done judges nothing; one with other settings refuses to mix labels in the file.
    again = asyncio.run(label_pairs(judge, pairs, out, setup))
    assert (again.already_done, again.labeled) == (6, 0)
    with pytest.raises(ValueError, match="sampling"):
        asyncio.run(label_pairs(judge, pairs, out, JudgeSetup(sampling="all", progress=False)))


def test_preference_rows_are_read_without_their_labels(tmp_path):
    rows = [{"prompt": f"question {i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(40)]
    rows.append(rows[0])  # a repeated pair is labelled once
    rows.append({"prompt": "q", "chosen": "same", "rejected": "same"})
    pairs = read_pairs(write_jsonl(tmp_path / "prefs.jsonl", rows), seed=3)
    assert len(pairs) == 40
    shown_first = sum(p.response_a.startswith("good") for p in pairs)
    assert 10 <= shown_first <= 30  # the chosen response is not always in one place
    assert [p.id for p in read_pairs(tmp_path / "prefs.jsonl", seed=3)] == [p.id for p in pairs]
    flipped = read_pairs(tmp_path / "prefs.jsonl", seed=4)
    assert {p.id for p in flipped} == {p.id for p in pairs}  # the id does not depend on the order shown


def test_evaluate_judge_on_human_labels(preferences, backend, tmp_path):
    groups, _ = load_source(SourceSpec(path=str(preferences / "pandalm.jsonl")))
    groups = groups[:6]
    judge = Judge(backend, ConstitutionLibrary(), VerdictCache())
    result = asyncio.run(evaluate_judge(judge, groups, JudgeSetup(sampling="sample", seed=1, progress=False)))

    verdicts = result.verdicts
    assert result.pairs == len(verdicts) == 6 and result.failed == 0
    assert 0 <= result.agreement <= 1
    assert result.agreement == pytest.approx(np.mean([v.judge_pick == v.human_pick for v in verdicts]))
    assert result.inconsistency_rate == pytest.approx(np.mean([v.inconsistent for v in verdicts]))
    consistent = [v for v in verdicts if not v.inconsistent]
    assert result.consistent_pairs == len(consistent)
    if consistent:
        assert result.agreement_consistent == pytest.approx(np.mean([v.judge_pick == v.human_pick for v in consistent]))
    assert result.mean_abs_margin == pytest.approx(np.mean([abs(v.p_a - 0.5) for v in verdicts]))
    confusion = result.confusion
    assert sum(sum(row.values()) for row in confusion.values()) == 6
    assert sum(confusion["human_A"].values()) == sum(confusion["human_B"].values()) == 3  # chosen first in half
    assert set(result.by_source) == {"pandalm"} and result.by_source["pandalm"].pairs == 6
    assert result.judge.model == "smollm2" and result.judge.constitution == "default@1.0"
    report = format_table(result)
    assert "smollm2" in report and f"{result.agreement:.1%}" in report and "By source" not in report  # one source
    write_json(result, tmp_path / "report" / "judge.json")  # what `eval-judge --out` writes: the figures on top
    saved = json.loads((tmp_path / "report" / "judge.json").read_text())
    assert saved["agreement"] == result.agreement and saved["confusion"] == confusion
    assert saved["by_source"]["pandalm"]["pairs"] == 6 and saved["judge"]["constitution"] == "default@1.0"
    assert [v["id"] for v in saved["verdicts"]] == [v.id for v in verdicts]

    # Each recorded verdict is the judge's own answer on the pair as it was shown (the cache answers here).
    pairs = {pair_id(g.prompt, *g.responses): g for g in groups}
    for v in verdicts:
        g = pairs[v.id]
        chosen, rejected = g.responses[g.comparisons[0].winner], g.responses[g.comparisons[0].loser]
        a, b = (chosen, rejected) if v.human_pick == "A" else (rejected, chosen)
        request = JudgeRequest(
            mode="pairwise", sampling="sample", seed=1, items=[JudgeItem(prompt=g.prompt, response_a=a, response_b=b)]
        )
        direct = asyncio.run(judge.judge(request)).verdicts[0]
        assert direct.score == pytest.approx(v.p_a) and direct.principles[0].cached


@pytest.mark.slow
def test_rlaif_loop_labels_train_export_serve(preferences, backend, tmp_path):
    from arbiter.bundle import load_bundle
    from arbiter.bundle.onnx_model import OnnxRewardModel
    from arbiter.training.config import TrainConfig
    from arbiter.training.export import export_bundle
    from arbiter.training.train import train
    from tests.server import running_server

    # 24 human pairs with short texts; read_pairs drops their labels.
    rows = []
    with (preferences / "hh_rlhf_harmless.jsonl").open() as handle:
        for line in handle:
            row = json.loads(line)
            if len(json.dumps(row["prompt"])) + len(row["chosen"]) + len(row["rejected"]) < 600:
                rows.append({k: row[k] for k in ("prompt", "chosen", "rejected")})
            if len(rows) == 24:
                break
    pairs = read_pairs(write_jsonl(tmp_path / "hh.jsonl", rows))
    assert len(pairs) == 24
    labels = tmp_path / "labels.jsonl"
    judge = Judge(backend, ConstitutionLibrary())
    report = asyncio.run(label_pairs(judge, pairs, labels, JudgeSetup(sampling="sample", progress=False)))
    assert report.labeled == 24 and len(read_jsonl(labels)) == 24

    config = TrainConfig(
        data=[SourceSpec(path=str(labels))],
        base_model="minilm",
        max_length=64,
        batch_size=8,
        max_steps=6,
        lr=5e-5,
        head_lr=2e-3,
        eval_fraction=0.25,
        log_every=2,
        out=tmp_path / "run",
        name="rlaif-minilm",
    )
    run = train(config)
    bundle = export_bundle(run / "checkpoint", tmp_path / "bundle", name="rlaif-minilm", model_version="1").path

    prompts = [pairs[0].prompt, "Tell me a joke."]
    responses = [pairs[0].response_a, "Why did the chicken cross the road? To get to the other side."]
    expected = OnnxRewardModel.from_bundle(load_bundle(bundle))(prompts, responses)
    with running_server(tmp_path, "--bundles", str(bundle), "--judge-backend", "off") as server:
        items = [{"prompt": p, "response": r} for p, r in zip(prompts, responses, strict=True)]
        reply = httpx.post(server.url + "/v1/score", json={"items": items}, timeout=30)
    assert reply.status_code == 200, reply.text
    assert reply.json()["model"] == "rlaif-minilm"
    assert np.allclose(reply.json()["scores"], expected, atol=1e-5)
