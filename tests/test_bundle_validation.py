"""Loading a bundle checks everything, and says what is wrong in words."""

from __future__ import annotations

import json
import shutil

import onnx
import pytest

from arbiter.bundle import BundleError, load_bundle
from arbiter.bundle.checksums import file_entry
from arbiter.bundle.onnx_model import OnnxRewardModel


@pytest.fixture
def copy(bundle_dir, tmp_path):
    target = tmp_path / "b"
    shutil.copytree(bundle_dir, target)
    return target


def edit_manifest(folder, change):
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_valid_bundle_loads(bundle_dir):
    bundle = load_bundle(bundle_dir)
    assert bundle.name == "test-minilm" and bundle.manifest.model_version == "1"
    assert set(bundle.manifest.files) >= {"model.onnx", "tokenizer.json", "eval.json", "README.md"}
    assert "# test-minilm" in (bundle_dir / "README.md").read_text()


def test_not_a_folder(tmp_path):
    with pytest.raises(BundleError, match="not a bundle folder"):
        load_bundle(tmp_path / "nothing")


def test_no_manifest(copy):
    (copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match=r"no manifest\.json"):
        load_bundle(copy)


def test_manifest_not_json(copy):
    (copy / "manifest.json").write_text("{oops")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(copy)


def test_newer_major_version_refused_and_newer_minor_accepted(copy):
    edit_manifest(copy, lambda m: m.update(format_version="2.0"))
    with pytest.raises(BundleError, match=r"bundle format 2\.0 is not readable"):
        load_bundle(copy)
    edit_manifest(copy, lambda m: m.update(format_version="1.7", field_from_the_future=True))
    assert load_bundle(copy).manifest.format_version == "1.7"


def test_a_bundle_of_format_1_0_reads_as_it_did(copy):
    """1.1 added objectives, source and runtime: a 1.0 manifest, which has none of them, still scores with ONNX."""
    from arbiter.bundle.onnx_model import OnnxRewardModel

    def as_1_0(manifest: dict) -> None:
        manifest.update(format_version="1.0")
        for field in ("objectives", "source", "runtime"):
            manifest.pop(field, None)

    edit_manifest(copy, as_1_0)
    bundle = load_bundle(copy)
    assert (bundle.manifest.runtime, bundle.manifest.objectives) == ("onnx", None)
    assert OnnxRewardModel.from_bundle(bundle)(["a prompt"], ["a response"]).shape == (1,)


def test_a_torch_runtime_bundle_needs_no_graph_but_an_onnx_one_does(copy):
    edit_manifest(copy, lambda m: m["files"].pop("model.onnx"))
    with pytest.raises(BundleError, match=r"manifest lists no model\.onnx"):
        load_bundle(copy)
    edit_manifest(copy, lambda m: m.update(runtime="torch"))
    assert load_bundle(copy).manifest.runtime == "torch"


def test_a_process_reward_model_needs_a_graph_that_reads_every_token(copy):
    """An outcome model's graph (one score) under a manifest that says PRM is refused before it serves."""
    edit_manifest(copy, lambda m: m["model"].update(steps={"token": "<step>", "token_id": 30522}))
    with pytest.raises(BundleError, match="a process reward model takes input_ids and attention_mask and gives "
                                          "token_scores"):  # fmt: skip
        OnnxRewardModel.from_bundle(load_bundle(copy))
    edit_manifest(copy, lambda m: m.update(runtime="torch"))
    with pytest.raises(BundleError, match="runs on ONNX Runtime only"):
        load_bundle(copy)


def test_missing_version(copy):
    edit_manifest(copy, lambda m: m.pop("format_version"))
    with pytest.raises(BundleError, match="missing or malformed format_version"):
        load_bundle(copy)


def test_invalid_field(copy):
    edit_manifest(copy, lambda m: m["model"].update(pooling="average"))
    with pytest.raises(BundleError, match=r"invalid manifest: model\.pooling"):
        load_bundle(copy)


def test_missing_file(copy):
    (copy / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match=r"missing file tokenizer\.json"):
        load_bundle(copy)


def test_required_file_not_listed(copy):
    edit_manifest(copy, lambda m: m["files"].pop("model.onnx"))
    with pytest.raises(BundleError, match=r"lists no model\.onnx"):
        load_bundle(copy)


def test_changed_file_fails_checksum(copy):
    data = bytearray((copy / "model.onnx").read_bytes())
    data[-100] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="checksum mismatch"):
        load_bundle(copy)
    assert load_bundle(copy, verify_checksums=False).name == "test-minilm"


def test_truncated_file_fails_size(copy):
    data = (copy / "model.onnx").read_bytes()
    (copy / "model.onnx").write_bytes(data[:1000])
    with pytest.raises(BundleError, match="size 1000 bytes"):
        load_bundle(copy)


def list_file(folder, name, file):
    """List `name` in the manifest with `file`'s real size and checksum, so only the new rules can refuse it."""
    entry = file_entry(file).model_dump()
    edit_manifest(folder, lambda m: m["files"].update({name: entry}))


@pytest.fixture
def secret(tmp_path):
    """A file beside the bundle folder, not in it: what a crafted manifest reaches for."""
    path = tmp_path / "secret.txt"
    path.write_text("not the bundle's")
    return path


@pytest.mark.parametrize("name", ["../secret.txt", "{secret}", "sub/../../secret.txt"])
def test_manifest_names_that_reach_out_are_refused(copy, secret, name):
    (copy / "sub").mkdir()  # so that every name leads to the real file outside: only its form can refuse it
    list_file(copy, name.format(secret=secret), secret)
    with pytest.raises(BundleError, match="is not a plain file name"):
        load_bundle(copy)


@pytest.mark.parametrize("name", ["..", ".", "", "..\\secret.txt", "nul\0name"])
def test_other_unsafe_names_are_refused(copy, name):
    edit_manifest(copy, lambda m: m["files"].update({name: {"sha256": "0" * 64, "bytes": 0}}))
    with pytest.raises(BundleError, match="is not a plain file name"):
        load_bundle(copy)


def test_link_out_of_the_folder_is_refused_and_one_inside_is_not(copy, secret):
    (copy / "notes.txt").symlink_to(secret)
    list_file(copy, "notes.txt", secret)
    with pytest.raises(BundleError, match=r"notes\.txt leads outside the bundle folder"):
        load_bundle(copy)
    (copy / "notes.txt").unlink()
    (copy / "notes.txt").symlink_to(copy / "README.md")
    list_file(copy, "notes.txt", copy / "README.md")
    assert load_bundle(copy).file("notes.txt").read_text() == (copy / "README.md").read_text()


def test_link_loop_is_refused(copy):
    (copy / "loop").symlink_to(copy / "loop")
    edit_manifest(copy, lambda m: m["files"].update({"loop": {"sha256": "0" * 64, "bytes": 0}}))
    with pytest.raises(BundleError, match="loop cannot be resolved"):
        load_bundle(copy)


def replace_file(folder, name, content):
    """Overwrite a bundle file and record its new checksum: the checks at load pass, what follows must not."""
    path = folder / name
    path.write_bytes(content)
    list_file(folder, name, path)
    return load_bundle(folder)


@pytest.mark.parametrize(
    "corrupt",
    [lambda model: b"not a protobuf", lambda model: b"", lambda model: model[:5000]],
    ids=["garbage", "empty", "truncated"],
)
def test_corrupt_model_is_a_bundle_error(copy, corrupt):
    bundle = replace_file(copy, "model.onnx", corrupt((copy / "model.onnx").read_bytes()))
    with pytest.raises(BundleError, match=r"model\.onnx: not a usable ONNX model"):
        OnnxRewardModel.from_bundle(bundle)


def test_model_with_other_inputs_is_a_bundle_error(copy):
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.INT64, ["batch"])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.INT64, ["batch"])],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)])
    bundle = replace_file(copy, "model.onnx", model.SerializeToString())
    with pytest.raises(BundleError, match=r"the graph takes \['x'\] and gives \['y'\]"):
        OnnxRewardModel.from_bundle(bundle)


def without_unk(tokenizer_json):
    """Valid JSON that tokenizers parses, but whose WordPiece fails on its first encode."""
    data = json.loads(tokenizer_json)
    for token in ("[UNK]", "a"):
        data["model"]["vocab"].pop(token)
    return json.dumps(data)


@pytest.mark.parametrize(
    "corrupt",
    [lambda text: "{oops", lambda text: '{"model": 1}', lambda text: "[]", without_unk],
    ids=["not-json", "not-a-tokenizer", "wrong-type", "no-unk-token"],
)
def test_corrupt_tokenizer_is_a_bundle_error(copy, corrupt):
    bundle = replace_file(copy, "tokenizer.json", corrupt((copy / "tokenizer.json").read_text()).encode())
    for open_it in (bundle.tokenizer, bundle.input_builder, lambda: OnnxRewardModel.from_bundle(bundle)):
        with pytest.raises(BundleError, match=r"tokenizer\.json: not a usable tokenizers file"):
            open_it()


@pytest.mark.parametrize(
    ("template", "problem"),
    [(None, "no chat_template is given"), ("{% for m in messages %}{{ m.content }}", "does not compile")],
)
def test_unusable_chat_template_is_a_bundle_error(copy, template, problem):
    edit_manifest(copy, lambda m: m["model"]["rendering"].update(kind="chat_template", chat_template=template))
    bundle = load_bundle(copy)
    with pytest.raises(BundleError, match=f"unusable model.rendering .*{problem}"):
        bundle.input_builder()
