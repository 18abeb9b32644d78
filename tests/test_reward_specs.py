"""Reward specs: schema and validation, every transform, the derived components, running statistics and the
composition, each against numbers worked out by hand. Pure numpy: no models, no server."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import pytest

from arbiter.errors import NotFound
from arbiter.rewards.compose import ItemContext, compose, running_key
from arbiter.rewards.parts import read
from arbiter.rewards.running import RunningStats
from arbiter.rewards.spec import (
    SpecError,
    SpecLibrary,
    check_spec,
    leaves,
    load_spec,
    parse_spec,
    topological_order,
)
from arbiter.rewards.transforms import clip, group_norm, length_penalty, logit, whiten


def spec_of(components: list[dict], reward: list[dict] | None = None, transforms: list[dict] | None = None):
    data = {"name": "t", "version": "1", "components": components}
    data["reward"] = reward if reward is not None else [{"component": components[0]["name"], "weight": 1.0}]
    if transforms is not None:
        data["transforms"] = transforms
    return parse_spec(data, "t.yaml")


def items(responses: list[str], groups: list[str | None] | None = None, unsafe: list[bool] | None = None):
    return [
        ItemContext(
            prompt="p",
            response=r,
            group=groups[i] if groups else None,
            unsafe=unsafe[i] if unsafe else None,
        )
        for i, r in enumerate(responses)
    ]


def run(
    spec, raw: dict, its: list[ItemContext], normalization: dict | None = None, running: RunningStats | None = None
):
    raw = {k: np.asarray(v, dtype=np.float64) for k, v in raw.items()}
    return compose(spec, raw, its, normalization=normalization or {}, running=running or RunningStats())


def error_of(data: dict) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(data, "bad.yaml")
    assert str(info.value).startswith("bad.yaml: ")
    return str(info.value)


def rm(name: str = "rm", **extra) -> dict:
    return {"name": name, "kind": "model", "model": "default", **extra}


# -- transforms, one by one ----------------------------------------------------------------------------------------


def test_normalize_uses_the_models_stored_statistics():
    spec = spec_of([rm(transforms=[{"kind": "normalize"}])])
    out = run(spec, {"rm": [1.0, 3.0, 7.0]}, items(["a", "b", "c"]), normalization={"default": (3.0, 2.0)})
    np.testing.assert_allclose(out.components["rm"], [-1.0, 0.0, 2.0])
    np.testing.assert_allclose(out.raw["rm"], [1.0, 3.0, 7.0])
    with pytest.raises(ValueError, match="normalize needs the model's stored mean/std"):
        run(spec, {"rm": [1.0]}, items(["a"]), normalization={})


def test_whiten_over_the_batch():
    # mean 2, population std sqrt(2/3)
    np.testing.assert_allclose(whiten(np.array([1.0, 2.0, 3.0]), 0.0), [-1.224744871, 0.0, 1.224744871])
    assert whiten(np.array([5.0]), 1e-6).tolist() == [0.0]  # a batch of one gives 0
    spec = spec_of([rm(transforms=[{"kind": "whiten", "eps": 1.0}])])
    # x = [0, 4]: mean 2, std 2, (x - 2) / (2 + 1)
    np.testing.assert_allclose(run(spec, {"rm": [0.0, 4.0]}, items(["a", "b"])).rewards, [-2 / 3, 2 / 3])


def test_logit_inverts_the_sigmoid_and_clamps():
    np.testing.assert_allclose(logit(np.array([0.5, 0.75]), 1e-6), [0.0, math.log(3)])
    np.testing.assert_allclose(logit(np.array([0.0, 1.0]), 0.01), [math.log(0.01 / 0.99), math.log(0.99 / 0.01)])


def test_clip_with_one_or_both_bounds():
    x = np.array([-10.0, 0.0, 10.0])
    assert clip(x, -5, 5).tolist() == [-5.0, 0.0, 5.0]
    assert clip(x, None, 1).tolist() == [-10.0, 0.0, 1.0]
    spec = spec_of([rm()], transforms=[{"kind": "clip", "min": -1}])
    assert run(spec, {"rm": x}, items(["a", "b", "c"])).rewards.tolist() == [-1.0, 0.0, 10.0]


def test_length_penalty_in_words_past_the_target():
    assert length_penalty(np.array([1.0, 1.0]), np.array([3.0, 10.0]), 0.5, 4).tolist() == [1.0, -2.0]
    spec = spec_of([rm()], transforms=[{"kind": "length_penalty", "coef": 0.1, "target": 2}])
    out = run(spec, {"rm": [1.0, 1.0]}, items(["one two", "one two three four five"]))
    np.testing.assert_allclose(out.rewards, [1.0, 0.7])  # 3 words over: 1 - 0.1 * 3


def test_scale_and_transform_order():
    spec = spec_of([rm(transforms=[{"kind": "scale", "mul": 2, "add": 1}, {"kind": "clip", "max": 4}])])
    # 2x + 1 then clip at 4: 0 -> 1, 1 -> 3, 2 -> 5 -> 4
    assert run(spec, {"rm": [0.0, 1.0, 2.0]}, items(["a", "b", "c"])).components["rm"].tolist() == [1.0, 3.0, 4.0]


def test_group_norm_per_group_with_a_group_of_one():
    x = np.array([1.0, 3.0, 10.0, 20.0, 7.0])
    # group a: [1, 3] mean 2 std 1; group b: [10, 20] mean 15 std 5; group c: [7] alone gives 0
    np.testing.assert_allclose(group_norm(x, ["a", "a", "b", "b", "c"], 1e-12), [-1.0, 1.0, -1.0, 1.0, 0.0])
    spec = spec_of([rm()], transforms=[{"kind": "group_norm"}])
    out = run(spec, {"rm": x}, items(list("abcde"), groups=["a", "b", "a", "b", "c"]))
    # a: [1, 10] mean 5.5 std 4.5; b: [3, 20] mean 11.5 std 8.5
    np.testing.assert_allclose(out.rewards, [-1.0, -1.0, 1.0, 1.0, 0.0], atol=1e-6)


def test_group_norm_without_group_ids_is_an_error():
    spec = spec_of([rm()], transforms=[{"kind": "group_norm"}])
    with pytest.raises(
        ValueError, match=r"the total: group_norm needs a group id on every item; 1 have none \(items 1\)"
    ):
        run(spec, {"rm": [1.0, 2.0]}, items(["a", "b"], groups=["g", None]))


# -- the sum and the derived components --------------------------------------------------------------------------


def test_weighted_sum_with_a_length_rule():
    spec = spec_of(
        [rm(), {"name": "words", "kind": "rule", "rule": "length", "unit": "words"},
         {"name": "chars", "kind": "rule", "rule": "length", "unit": "chars"}],
        reward=[{"component": "rm", "weight": 2.0}, {"component": "words", "weight": -0.5},
                {"component": "chars", "weight": 0.01}],
    )  # fmt: skip
    out = run(spec, {"rm": [1.0, 3.0]}, items(["a b c", "hello"]))
    assert out.raw["words"].tolist() == [3.0, 1.0] and out.raw["chars"].tolist() == [5.0, 5.0]
    # 2*1 - 0.5*3 + 0.01*5 = 0.55; 2*3 - 0.5*1 + 0.05 = 5.55
    np.testing.assert_allclose(out.rewards, [0.55, 5.55])
    np.testing.assert_allclose(out.total_before_transforms, out.rewards)


def test_ensemble_is_mean_minus_k_std_and_reports_the_std():
    spec = spec_of(
        [rm("a"), rm("b"), rm("c"), {"name": "ens", "kind": "ensemble", "members": ["a", "b", "c"], "k": 0.5}],
        reward=[{"component": "ens", "weight": 1.0}],
    )
    out = run(spec, {"a": [1.0, 2.0], "b": [2.0, 2.0], "c": [3.0, 2.0]}, items(["x", "y"]))
    std = math.sqrt(2 / 3)  # item 0: members [1, 2, 3], population std; item 1: all equal
    np.testing.assert_allclose(out.extras["ens.std"], [std, 0.0])
    np.testing.assert_allclose(out.components["ens"], [2.0 - 0.5 * std, 2.0])
    np.testing.assert_allclose(out.rewards, out.components["ens"])


def test_llama2_gate_on_the_flag_and_on_the_threshold():
    spec = spec_of(
        [rm("help"), {"name": "safe", "kind": "judge", "principles": ["harmless"]},
         {"name": "gated", "kind": "llama2", "safety": "safe", "helpfulness": "help", "threshold": 0.15}],
        reward=[{"component": "gated", "weight": 1.0}],
    )  # fmt: skip
    raw = {"help": [5.0, 5.0, 5.0, 5.0], "safe": [0.9, 0.1, 0.9, 0.15]}
    out = run(spec, raw, items(list("abcd"), unsafe=[False, False, True, None]))
    # 0: safe and above threshold -> help; 1: below threshold -> safety; 2: flagged -> safety; 3: at threshold -> help
    assert out.rewards.tolist() == [5.0, 0.1, 0.9, 5.0]
    assert out.extras["gated.used_safety"].tolist() == [0.0, 1.0, 1.0, 0.0]


def test_llama2_threshold_is_on_the_transformed_safety_and_derived_inputs_work():
    spec = spec_of(
        [rm("a"), rm("b"), {"name": "ens", "kind": "ensemble", "members": ["a", "b"], "k": 0},
         {"name": "safe", "kind": "judge", "transforms": [{"kind": "scale", "mul": 10}]},
         {"name": "gated", "kind": "llama2", "safety": "safe", "helpfulness": "ens", "threshold": 1.5,
          "transforms": [{"kind": "scale", "add": 100}]}],
        reward=[{"component": "gated", "weight": 1.0}],
    )  # fmt: skip
    out = run(spec, {"a": [1.0, 3.0], "b": [3.0, 5.0], "safe": [0.1, 0.2]}, items(["x", "y"]))
    # safety after its transform: [1, 2]; 1 < 1.5 uses safety, 2 uses the ensemble's mean 4; then + 100
    assert out.components["safe"].tolist() == [1.0, 2.0]
    assert out.rewards.tolist() == [101.0, 104.0]
    assert [c.name for c in topological_order(spec)] == ["a", "b", "ens", "safe", "gated"]
    assert [c.name for c in leaves(spec)] == ["a", "b", "safe"]


def test_raw_scores_are_checked():
    spec = spec_of([rm(), {"name": "j", "kind": "judge"}], reward=[{"component": "rm", "weight": 1}])
    with pytest.raises(ValueError, match=r"no scores for \['j'\]"):
        run(spec, {"rm": [1.0]}, items(["a"]))
    with pytest.raises(ValueError, match=r"'rm': \(2,\) values for 1 items"):
        run(spec, {"rm": [1.0, 2.0], "j": [0.5]}, items(["a"]))
    with pytest.raises(ValueError, match=r"'rm': non-finite scores at items \[0\]"):
        run(spec, {"rm": [math.nan], "j": [0.5]}, items(["a"]))
    with pytest.raises(ValueError, match=r"scores for \['zz'\], which are not model, judge or verifier components"):
        run(spec, {"rm": [1.0], "j": [0.5], "zz": [1.0]}, items(["a"]))


# -- running statistics ------------------------------------------------------------------------------------------


def test_running_stats_by_hand():
    stats = RunningStats()
    # first batch [1, 2, 3]: mean 2, population var 2/3
    mean, std = stats.update("k", np.array([1.0, 2.0, 3.0]), 0.5)
    assert (mean, std) == pytest.approx((2.0, math.sqrt(2 / 3)))
    # batch [5, 7]: b = 6, v = 1; mean = .5*2 + .5*6 = 4; var = .5*(2/3) + .5*1 + .5*.5*(6-2)^2 = 29/6
    mean, std = stats.update("k", np.array([5.0, 7.0]), 0.5)
    assert (mean, std) == pytest.approx((4.0, math.sqrt(29 / 6)))
    assert stats.get("k") == pytest.approx((4.0, math.sqrt(29 / 6)))
    state = stats.state("k")
    assert (state.count, state.batches) == (5, 2)
    assert stats.get("other") is None
    with pytest.raises(ValueError, match="finite"):
        stats.update("k", np.array([math.inf]), 0.5)
    with pytest.raises(ValueError, match="momentum"):
        stats.update("k", np.array([1.0]), 1.0)


def test_running_stats_survive_a_restart(tmp_path: Path):
    db = tmp_path / "state" / "running.sqlite"
    with RunningStats(db) as first:
        first.update("k", np.array([1.0, 2.0, 3.0]), 0.5)
    second = RunningStats(db)
    assert second.get("k") == pytest.approx((2.0, math.sqrt(2 / 3)))
    # continues from the saved state, exactly as if there had been no restart
    assert second.update("k", np.array([5.0, 7.0]), 0.5) == pytest.approx((4.0, math.sqrt(29 / 6)))
    assert RunningStats(db).get("k") == pytest.approx((4.0, math.sqrt(29 / 6)))
    assert second.reset("k") == 1 and second.get("k") is None
    second.close()
    with pytest.raises(RuntimeError, match="closed"):
        second.get("k")


def test_running_stats_are_thread_safe(tmp_path: Path):
    stats = RunningStats(tmp_path / "r.sqlite")
    threads = [
        threading.Thread(target=lambda: [stats.update("k", np.ones(2), 0.9) for _ in range(25)]) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    state = stats.state("k")
    assert (state.batches, state.count) == (100, 200)


def test_running_norm_updates_first_then_normalizes_and_persists(tmp_path: Path):
    spec = spec_of(
        [rm(transforms=[{"kind": "running_norm", "momentum": 0.5, "eps": 1e-12}])],
        transforms=[{"kind": "scale"}, {"kind": "running_norm", "momentum": 0.5, "eps": 1e-12}],
    )
    db = tmp_path / "running.sqlite"
    out = run(spec, {"rm": [1.0, 3.0]}, items(["a", "b"]), running=RunningStats(db))
    # first batch [1, 3]: mean 2, std 1 -> [-1, 1]; the total's own statistics then see [-1, 1]: mean 0, std 1
    np.testing.assert_allclose(out.components["rm"], [-1.0, 1.0])
    np.testing.assert_allclose(out.rewards, [-1.0, 1.0])
    assert set(RunningStats(db).keys()) == {"t@1/component/rm/0", "t@1/total/1"}
    assert running_key(spec, "rm") == "t@1/component/rm" and running_key(spec) == "t@1/total"
    # a new process on the same file: batch [6, 6]: b = 6, v = 0 -> mean = 4, var = .5*1 + 0 + .25*16 = 4.5
    out = run(spec, {"rm": [6.0, 6.0]}, items(["a", "b"]), running=RunningStats(db))
    np.testing.assert_allclose(out.components["rm"], [2 / math.sqrt(4.5)] * 2)


def test_running_norm_without_update_leaves_the_statistics_alone():
    spec = spec_of([rm(transforms=[{"kind": "running_norm", "momentum": 0.5, "eps": 1e-12}])])
    stats = RunningStats()
    its = items(["a", "b"])
    # before any update: the batch's own statistics ([0, 4]: mean 2, std 2), and nothing is stored
    probe = compose(spec, {"rm": np.array([0.0, 4.0])}, its, normalization={}, running=stats, update=False)
    np.testing.assert_allclose(probe.rewards, [-1.0, 1.0])
    assert stats.keys() == []
    run(spec, {"rm": [1.0, 3.0]}, its, running=stats)  # mean 2, std 1
    probe = compose(spec, {"rm": np.array([0.0, 4.0])}, its, normalization={}, running=stats, update=False)
    np.testing.assert_allclose(probe.rewards, [-2.0, 2.0])
    assert stats.state("t@1/component/rm/0").batches == 1


# -- validation --------------------------------------------------------------------------------------------------


def test_unknown_references_are_all_reported():
    message = error_of(
        {"name": "x", "version": "1",
         "components": [rm("safety"), {"name": "e", "kind": "ensemble", "members": ["safety", "nope"]},
                        {"name": "g", "kind": "llama2", "safety": "saftey", "helpfulness": "e", "threshold": 0.1}],
         "reward": [{"component": "gone", "weight": 1}]}
    )  # fmt: skip
    assert "component 'e': members: unknown component 'nope'" in message
    assert "component 'g': safety: unknown component 'saftey' (did you mean 'safety'?)" in message
    assert "reward[0]: unknown component 'gone'" in message


def test_cycles_are_named():
    message = error_of(
        {"name": "x", "version": "1",
         "components": [rm(), {"name": "a", "kind": "ensemble", "members": ["rm", "b"]},
                        {"name": "b", "kind": "llama2", "safety": "rm", "helpfulness": "c", "threshold": 0},
                        {"name": "c", "kind": "ensemble", "members": ["a", "rm"]}],
         "reward": [{"component": "a", "weight": 1}]}
    )  # fmt: skip
    assert "cycle among components: a -> b -> c -> a" in message


def test_bad_weights_and_empty_reward():
    message = error_of(
        {"name": "x", "version": "1", "components": [rm()], "reward": [{"component": "rm", "weight": math.nan}]}
    )
    assert "reward[0] ('rm'): weight must be a finite number, got nan" in message
    message = error_of({"name": "x", "version": "1", "components": [rm()], "reward": []})
    assert "reward: empty; it needs at least one {component, weight}" in message
    message = error_of(
        {"name": "x", "version": "1", "components": [rm()],
         "reward": [{"component": "rm", "weight": 1}, {"component": "rm", "weight": 2}]}
    )  # fmt: skip
    assert "component 'rm' is listed twice" in message


def test_normalize_only_on_model_components():
    message = error_of(
        {"name": "x", "version": "1",
         "components": [{"name": "j", "kind": "judge", "transforms": [{"kind": "normalize"}]}],
         "reward": [{"component": "j", "weight": 1}], "transforms": [{"kind": "normalize"}]}
    )  # fmt: skip
    assert "component 'j': normalize is only valid on model components (this one is judge)" in message
    assert "transforms (on the total): normalize is only valid on model components" in message


def test_duplicates_and_several_problems_at_once():
    message = error_of(
        {"name": "x", "version": "1", "components": [rm(), rm(), {"name": "w", "kind": "rule", "rule": "length"}],
         "reward": [{"component": "w", "weight": math.inf}, {"component": "q", "weight": 1}]}
    )  # fmt: skip
    assert message == (
        "bad.yaml: duplicate component names: ['rm']; reward[0] ('w'): weight must be a finite number, got inf; "
        "reward[1]: unknown component 'q'"
    )


def test_unknown_kinds_and_fields_and_bad_params():
    message = error_of(
        {"name": "x", "version": "1",
         "components": [{"name": "rm", "kind": "modle", "model": "d"},
                        rm("q", foo=1, transforms=[{"kind": "clip"}, {"kind": "running_norm", "momentum": 1.5},
                                                   {"kind": "sharpen"}])],
         "reward": [{"component": "q", "weight": 1}], "extra": True}
    )  # fmt: skip
    assert "components[0] 'rm': Input tag 'modle' found using 'kind' does not match" in message
    assert "components[1] 'q'.foo: Extra inputs are not permitted" in message
    assert "components[1] 'q'.transforms[0]: clip needs min, max or both" in message
    assert "components[1] 'q'.transforms[1].momentum: Input should be less than 1" in message
    assert "components[1] 'q'.transforms[2]: Input tag 'sharpen'" in message
    assert "extra: Extra inputs are not permitted" in message
    assert "is not a name" in error_of({"name": "Bad Name", "version": "1", "components": [rm()], "reward": []})


def test_spec_error_takes_a_source_and_problems_or_one_message():
    error = SpecError("a.yaml", ["one", "two"])
    assert (str(error), error.source, error.problems) == ("a.yaml: one; two", "a.yaml", ["one", "two"])
    assert str(SpecError("a.yaml: one; b.yaml: two")) == "a.yaml: one; b.yaml: two"


def test_check_against_what_the_server_has():
    spec = spec_of(
        [rm(transforms=[{"kind": "normalize"}]), {"name": "other", "kind": "model", "model": "missing"},
         {"name": "j", "kind": "judge", "constitution": "default", "principles": ["harmless", "witty"]}],
    )  # fmt: skip
    with pytest.raises(SpecError) as info:
        check_spec(spec, {"default"}, judge_available=False, normalization={"default": None})
    message = str(info.value)
    assert message.startswith("t.yaml: ")
    assert "component 'rm': normalize needs model 'default''s stored mean/std, and its bundle has none" in message
    assert "component 'other': model 'missing' is not served; served: ['default']" in message
    assert "component 'j': a judge component, and this server has no judge" in message
    with pytest.raises(SpecError, match=r"constitution 'default' has no principles \['witty'\]"):
        SpecLibrary.check(
            spec, {"default", "missing"}, True, {"default": (0.0, 1.0)}, constitutions={"default": {"harmless"}}
        )
    check_spec(spec, {"default", "missing"}, True, {"default": (0.0, 1.0)})


# -- the library -------------------------------------------------------------------------------------------------


def test_builtin_default_spec_loads_and_composes():
    library = SpecLibrary()
    assert "default" in library.names
    spec = library.get("default")
    assert library.get(None) is spec
    assert [c.name for c in leaves(spec)] == ["rm"]
    # no model named: the server's default, which the server fills in before checking
    with pytest.raises(SpecError, match="component 'rm': no model named; resolve it to the server's default first"):
        check_spec(spec, {"main"}, judge_available=False, normalization={"main": (1.0, 2.0)})
    resolved = spec.model_copy(update={"components": [spec.components[0].model_copy(update={"model": "main"})]})
    check_spec(resolved, {"main"}, judge_available=False, normalization={"main": (1.0, 2.0)})
    out = run(resolved, {"rm": [3.0, 3.0]}, items(["short", "word " * 400]), normalization={"main": (1.0, 2.0)})
    np.testing.assert_allclose(out.rewards, [1.0, 1.0 - 0.01 * 100])
    known = r"\['code', 'default', 'grpo-math', 'helpful-harmless', 'math'\]"
    with pytest.raises(NotFound, match=rf"no reward spec named 'nope'; known: {known}"):
        library.get("nope")


def test_user_specs_override_by_name(tmp_path: Path):
    (tmp_path / "mine.yaml").write_text(
        "name: default\nversion: 2\ncomponents: [{name: r, kind: model, model: other}]\n"
        "reward: [{component: r, weight: 1}]\n"
    )
    (tmp_path / "extra.yaml").write_text(
        "name: safe\nversion: '1'\ncomponents: [{name: r, kind: model, model: other}]\n"
        "reward: [{component: r, weight: 1}]\n"
    )
    library = SpecLibrary([tmp_path])
    assert set(library.names) == set(SpecLibrary().names) | {"safe"}
    assert library.get("default").version == "2"
    assert library.get("default").source == str(tmp_path / "mine.yaml")
    (tmp_path / "broken.yaml").write_text("name: broken\nversion: '1'\ncomponents: []\nreward: []\n")
    with pytest.raises(SpecError, match=r"broken.yaml: components: List should have at least 1 item"):
        SpecLibrary([tmp_path])
    assert load_spec(tmp_path / "extra.yaml").name == "safe"


def test_verifier_options_are_checked_with_the_spec():
    message = error_of(
        {"name": "x", "version": "1",
         "components": [{"name": "correct", "kind": "verifier", "verifier": "math",
                         "options": {"extract": ["boxd"], "timeout_s": 0}}],
         "reward": [{"component": "correct", "weight": 1}]}
    )  # fmt: skip
    assert "options of the math verifier" in message and "extract.0" in message and "timeout_s" in message
    fine = spec_of(
        [{"name": "correct", "kind": "verifier", "verifier": "format", "options": {"format": "think_answer"}}]
    )
    assert [c.kind for c in leaves(fine)] == ["verifier"]


def test_verifier_values_are_composed_like_any_fetched_leaf():
    spec = spec_of(
        [
            {"name": "correct", "kind": "verifier", "verifier": "math"},
            {"name": "words", "kind": "rule", "rule": "length"},
        ],
        reward=[{"component": "correct", "weight": 1.0}, {"component": "words", "weight": -0.1}],
        transforms=[{"kind": "group_norm"}],
    )
    result = run(spec, {"correct": [1.0, 0.0, 1.0, 1.0]}, items(["a", "a b", "a", "a"], groups=["q", "q", "r", "r"]))
    assert result.components["correct"].tolist() == [1.0, 0.0, 1.0, 1.0]
    assert np.allclose(result.rewards, [1.0, -1.0, 0.0, 0.0], atol=1e-4)


@pytest.mark.parametrize(
    ("response", "reasoning", "answer"),
    [
        ("<think> a </think> b ", "a", "b"),
        ("no block at all", "", "no block at all"),
        ("<think>cut at the token limit", "cut at the token limit", ""),
        ("<think>a</think>b<think>c</think>d", "a", "b<think>c</think>d"),  # the first block is the reasoning
        ("a </think> b", "a", "b"),  # the prompt opened the block (DeepSeek-R1's template)
        ("a </think> b </think> c", "a", "b </think> c"),
    ],
)
def test_parts_of_a_response(response: str, reasoning: str, answer: str):
    assert read(response, "reasoning") == reasoning and read(response, "answer") == answer
    assert read(response, "response") == response


def test_components_read_the_part_the_spec_names():
    spec = spec_of(
        [
            {"name": "thinking", "kind": "rule", "rule": "length", "part": "reasoning"},
            {"name": "answer_chars", "kind": "rule", "rule": "length", "unit": "chars", "part": "answer"},
        ],
        reward=[{"component": "thinking", "weight": 1.0}, {"component": "answer_chars", "weight": 1.0}],
        transforms=[{"kind": "length_penalty", "coef": 1.0, "target": 0}],
    )
    result = run(spec, {}, items(["<think>one two three</think>four", "five six"]))
    assert result.components["thinking"].tolist() == [3.0, 0.0]
    assert result.components["answer_chars"].tolist() == [4.0, 8.0]
    # length_penalty on the total counts the whole response's words, whatever parts the components read
    assert result.rewards.tolist() == [7.0 - 3.0, 8.0 - 2.0]
    assert "part" in error_of({"name": "t", "version": "1", "components": [rm(part="thoughts")], "reward": []})
