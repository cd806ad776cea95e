"""cars_ray.inference: a model resolved once (its metadata parsed once per load), on the backend asked for;
the checkpoint metadata's one writer and typed reader; Serve's typed arguments. In-process, no Ray."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from helpers.data import CLASS_NAMES, write_tiny_checkpoint
from helpers.entry_points import call_pipeline


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("inference") / "ckpt")


@pytest.fixture
def meta_parses(monkeypatch):
    """How often a checkpoint's metadata (meta.json or an ONNX file's) is parsed: calls of CheckpointMeta.from_dict."""
    from cars_ray.checkpoint import CheckpointMeta

    calls = []
    original = CheckpointMeta.from_dict.__func__
    monkeypatch.setattr(CheckpointMeta, "from_dict", classmethod(lambda cls, raw, source: calls.append(source)
                                                                 or original(cls, raw, source)))
    return calls


def images(size: int, count: int = 3) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def test_a_cpu_checkpoint_runs_its_cached_onnx_export_and_parses_its_metadata_once(checkpoint, tmp_path, meta_parses):
    from cars_ray.inference.model import LoadedModel

    copy = shutil.copytree(checkpoint, tmp_path / "ckpt")
    for attempt in ("export made", "export cached"):
        meta_parses.clear()
        model = LoadedModel.open(str(copy), "onnx")
        assert meta_parses == [str(copy / "meta.json")], attempt
        assert (model.source, model.kind, model.class_names) == ("checkpoint", "onnx", CLASS_NAMES)
        assert model.name == "test_efficientnet + linear head (onnx)"
    assert len(list((copy / "onnx").glob("*.onnx"))) == 1
    onnx_probs = model.probs(images(model.preprocessing.resize))
    torch_model = LoadedModel.open(str(copy), "torch")
    assert (torch_model.kind, torch_model.name) == ("torch", "test_efficientnet + linear head")
    torch_probs = torch_model.probs(images(model.preprocessing.resize))
    assert onnx_probs.shape == (3, len(CLASS_NAMES)) and onnx_probs.dtype == np.float32
    np.testing.assert_allclose(onnx_probs.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(onnx_probs, torch_probs, atol=1e-4)
    # An exported file is a model on its own: its embedded metadata, parsed once.
    exported = next((copy / "onnx").glob("*.onnx"))
    meta_parses.clear()
    from_file = LoadedModel.open(str(exported))
    assert meta_parses == [str(exported)] and from_file.source == "onnx"
    assert (from_file.class_names, from_file.preprocessing, from_file.meta.model, from_file.inference) == \
        (torch_model.class_names, torch_model.preprocessing, torch_model.meta.model, torch_model.inference)
    np.testing.assert_allclose(from_file.probs(images(model.preprocessing.resize)), onnx_probs, atol=1e-6)


def test_batch_prediction_actors_do_not_read_the_metadata_again(checkpoint, meta_parses):
    from cars_ray.checkpoint import read_meta
    from cars_ray.evaluate.predictor import BatchPredictor

    meta = read_meta(str(checkpoint))
    meta_parses.clear()
    predictor = BatchPredictor(str(checkpoint), meta)
    size = meta.preprocessing.resize
    out = predictor({"image": images(size, 2), "error": np.array(["", "unreadable: x"], dtype=object)})
    assert meta_parses == [] and predictor.model.kind == "torch"
    assert out["probs"].shape == (2, 4) and out["probs"][1].sum() == 0 and out["probs"][0].sum() == pytest.approx(1)


@pytest.mark.parametrize("name, is_onnx", [("m.onnx", True), ("M.ONNX", True), ("best", False), ("m.onnx.bak", False)])
def test_what_a_model_path_is_is_decided_in_one_place(tmp_path, name, is_onnx):
    from cars_ray.inference.onnx import is_onnx_file

    assert is_onnx_file(str(tmp_path / name)) is is_onnx
    (tmp_path / "folder.onnx").mkdir()
    assert not is_onnx_file(str(tmp_path / "folder.onnx")), "a directory is a checkpoint, whatever its name"


def test_make_meta_writes_every_field_and_read_meta_types_them(checkpoint):
    from cars_ray.checkpoint import InferenceSettings, read_meta
    from cars_ray.config import ModelConfig
    from cars_ray.preprocessing import Preprocessing

    raw = json.loads((checkpoint / "meta.json").read_text())
    assert set(raw) == {"class_names", "preprocessing", "model", "inference", "config", "epoch", "metrics", "ema"}
    meta = read_meta(str(checkpoint))
    assert isinstance(meta.model, ModelConfig) and isinstance(meta.preprocessing, Preprocessing)
    assert meta.inference == InferenceSettings(amp="bf16", channels_last=True) and meta.ema is False
    assert meta.to_dict() == raw


@pytest.mark.parametrize("amp, expected", [("auto", "bf16"), ("bf16", "bf16"), ("fp16", "fp16"), ("off", "off")])
def test_the_inference_settings_follow_the_training(amp, expected):
    import torch

    from cars_ray.checkpoint import InferenceSettings
    from cars_ray.config import TrainConfig

    settings = InferenceSettings.of_training(TrainConfig(amp=amp, channels_last=False))
    assert (settings.amp, settings.channels_last) == (expected, False)
    assert settings.autocast_dtype(torch.device("cpu")) is None, "CPU runs fp32"
    assert settings.autocast_dtype(torch.device("cuda")) == {"bf16": torch.bfloat16, "fp16": torch.float16}.get(expected)


def test_an_older_meta_without_inference_or_ema_reads_as_those_runs_were(checkpoint, tmp_path):
    from cars_ray.checkpoint import InferenceSettings, read_meta

    copy = shutil.copytree(checkpoint, tmp_path / "old", ignore=shutil.ignore_patterns("onnx"))
    raw = json.loads((copy / "meta.json").read_text())
    del raw["inference"], raw["ema"]
    (copy / "meta.json").write_text(json.dumps(raw))
    meta = read_meta(str(copy))
    assert meta.inference == InferenceSettings() and meta.ema is False


@pytest.mark.parametrize("change, words", [
    (lambda m: m.pop("class_names"), "lacks the field 'class_names'"),
    (lambda m: m.update(class_names=[]), "class_names must be a non-empty list"),
    (lambda m: m["model"].update(colour="red"), "model is not a cars_ray model config"),
    (lambda m: m["inference"].update(amp="fp8"), "inference must have amp one of bf16, fp16, off"),
    (lambda m: m["inference"].update(speed=2), "inference is not a cars_ray inference setting"),
    (lambda m: m["preprocessing"].pop("mean"), "preprocessing lacks the field(s) mean"),
])
def test_a_bad_meta_fails_in_one_sentence_naming_file_and_field(checkpoint, tmp_path, change, words):
    from cars_ray.checkpoint import read_meta
    from cars_ray.errors import CheckpointError

    copy = shutil.copytree(checkpoint, tmp_path / "bad", ignore=shutil.ignore_patterns("onnx"))
    raw = json.loads((copy / "meta.json").read_text())
    change(raw)
    (copy / "meta.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError) as err:
        read_meta(str(copy))
    assert words in str(err.value) and str(copy / "meta.json") in str(err.value) and "\n" not in str(err.value)


def test_serve_arguments_are_typed_with_one_default_each():
    from serve.app import Classifier, ServeArgs

    args = ServeArgs.model_validate({"checkpoint": "c", "max_batch_size": "8", "batching": "false", "num_cpus": "0.5"})
    assert (args.max_batch_size, args.batching, args.num_cpus, args.backend) == (8, False, 0.5, "auto")
    batched = Classifier.func_or_class.predict_batched
    assert batched._get_max_batch_size() == ServeArgs.model_fields["max_batch_size"].default == 16
    assert batched._get_batch_wait_timeout_s() == ServeArgs.model_fields["batch_wait_timeout_s"].default


@pytest.mark.parametrize("args, words", [
    ({}, "serve.app:build needs checkpoint=PATH"),
    ({"checkpoint": "c", "max_batchsize": "8"}, "serve.app:build has no argument 'max_batchsize'; the arguments are checkpoint"),
    ({"checkpoint": "c", "max_batch_size": "0"}, "serve.app:build argument max_batch_size='0': Input should be greater than"),
    ({"checkpoint": "c", "backend": "tensorrt"}, "serve.app:build argument backend='tensorrt': Input should be 'auto'"),
    ({"checkpoint": "c", "batching": "maybe"}, "serve.app:build argument batching='maybe'"),
])
def test_bad_serve_arguments_fail_in_one_sentence(args, words):
    from serve.app import build

    with pytest.raises(ValueError) as err:
        build(args)
    assert str(err.value).startswith(words) and "\n" not in str(err.value)


def test_the_replicas_batch_settings_take_effect(checkpoint, monkeypatch):
    import serve.app as app

    monkeypatch.setattr(app, "replica_cpus", lambda: 1.0)
    batched = app.Classifier.func_or_class.predict_batched
    try:
        replica = app.Classifier.func_or_class(app.ServeArgs(checkpoint=str(checkpoint), backend="torch",
                                                             max_batch_size=3, batch_wait_timeout_s=0.05))
        assert (batched._get_max_batch_size(), batched._get_batch_wait_timeout_s()) == (3, 0.05)
        assert replica.info()["backend"] == "torch" and replica.info()["class_names"] == CLASS_NAMES
    finally:  # the queue settings live on the class: back to the defaults for later tests in this process
        batched.set_max_batch_size(app.ServeArgs.model_fields["max_batch_size"].default)
        batched.set_batch_wait_timeout_s(app.ServeArgs.model_fields["batch_wait_timeout_s"].default)


def test_build_resolves_the_checkpoint_and_refuses_a_missing_one(checkpoint, tmp_path):
    from ray import serve

    from serve.app import build

    with pytest.raises(ValueError, match=f"checkpoint {tmp_path / 'gone'} does not exist"):
        build({"checkpoint": str(tmp_path / "gone")})
    assert isinstance(build({"checkpoint": str(checkpoint), "max_batch_size": "4"}), serve.Application)
    # `serve run serve.app:build key=value` and a serve config's args: Ray Serve validates them against ServeArgs
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary as serve_builds

    assert isinstance(serve_builds(build, {"checkpoint": str(checkpoint), "batching": "false"}), serve.Application)
    with pytest.raises(ValueError, match="^serve.app:build argument max_batch_size='many': Input should be a valid integer"):
        serve_builds(build, {"checkpoint": str(checkpoint), "max_batch_size": "many"})


def test_evaluate_and_predict_read_the_checkpoint_metadata_once(ray_local, checkpoint, folder_dataset, tmp_path,
                                                                meta_parses):
    """Each command parses meta.json once, on the driver; the scoring (here in the driver: a small CPU job)
    reuses it."""
    code, out, err = call_pipeline("evaluate.py", "--checkpoint", str(checkpoint), "--root-dir", str(folder_dataset),
                                   "--output-dir", str(tmp_path / "eval"))
    assert code == 0, out + err[-3000:]
    assert meta_parses == [str(checkpoint / "meta.json")]
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["num_images"] == 24
    meta_parses.clear()
    code, out, err = call_pipeline("predict.py", "--checkpoint", str(checkpoint), "--input", str(folder_dataset),
                                   "--output", str(tmp_path / "preds.csv"))
    assert code == 0, out + err[-3000:]
    assert meta_parses == [str(checkpoint / "meta.json")] and "24 images, 0 with an error" in out
