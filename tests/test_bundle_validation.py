"""Loading a bundle checks everything, and says what is wrong in words."""

from __future__ import annotations

import json
import shutil

import pytest

from arbiter.bundle import BundleError, load_bundle


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
