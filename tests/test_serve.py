"""The Serve app over real HTTP on a free loopback port: predictions, every bad input, concurrency, the page,
a replica's process killed under load (a replica's node killed: tests/test_multinode.py)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import threading

import pytest
import requests
import yaml
from PIL import Image

from helpers.data import CLASS_NAMES, REPO, free_port, make_image, two_tone, write_tiny_checkpoint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("serve") / "ckpt")


@pytest.fixture(scope="module")
def served(ray_local, checkpoint):
    from ray import serve

    from serve.app import build

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        # Two replicas (the last test kills one under load), a quick health check so it is replaced quickly.
        serve.run(build({"checkpoint": str(checkpoint), "max_pixels": "1000000", "max_body_bytes": "2000000",
                         "min_replicas": "2", "max_replicas": "2", "num_cpus": "0.5", "health_check_period_s": "1",
                         "max_files": "3"}),
                  name="cars", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


def jpeg_bytes(size=(120, 90), seed=0) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise(size, 40 + seed).convert("RGB").save(buffer, format="JPEG")
    return buffer.getvalue()


def test_predict_multipart_and_raw(served):
    response = requests.post(f"{served}/predict", files={"file": ("car.jpg", jpeg_bytes(), "image/jpeg")}, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    probabilities = [p["probability"] for p in body["predictions"]]
    assert len(probabilities) == 4 and probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) <= 1.0 + 1e-5 and {p["class_name"] for p in body["predictions"]} <= set(CLASS_NAMES)
    raw = requests.post(f"{served}/predict?topk=2", data=jpeg_bytes(), headers={"content-type": "image/jpeg"}, timeout=60)
    assert raw.status_code == 200 and len(raw.json()["predictions"]) == 2


def test_health_classes_page_docs(served):
    health = requests.get(f"{served}/health", timeout=30).json()
    assert health["num_classes"] == 4 and health["protocol"] == "box crops"
    assert [c["class_name"] for c in requests.get(f"{served}/classes", timeout=30).json()["classes"]] == CLASS_NAMES
    page = requests.get(f"{served}/", timeout=30).text
    assert "Drop car photos" in page and 'type="file" accept="image/*" multiple' in page
    assert "/predict" in requests.get(f"{served}/openapi.json", timeout=30).json()["paths"]
    assert requests.get(f"{served}/docs", timeout=30).status_code == 200


def bomb_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (2000, 1000), (10, 20, 30)).save(buffer, format="PNG")  # 2 MP > the 1 MP limit set above
    return buffer.getvalue()


@pytest.mark.parametrize("name, kwargs, status", [
    ("empty body", {"data": b"", "headers": {"content-type": "image/jpeg"}}, 400),
    ("not an image", {"data": b"hello world", "headers": {"content-type": "image/jpeg"}}, 400),
    ("truncated", {"data": jpeg_bytes((400, 300))[:600], "headers": {"content-type": "image/jpeg"}}, 400),
    ("decompression bomb", {"data": bomb_png(), "headers": {"content-type": "image/png"}}, 413),
    ("over the size limit", {"data": b"\xff" * 2_100_000, "headers": {"content-type": "image/jpeg"}}, 413),
    ("wrong content type", {"data": b"{}", "headers": {"content-type": "application/json"}}, 415),
    ("topk zero", {"data": jpeg_bytes(), "headers": {"content-type": "image/jpeg"}, "params": {"topk": "0"}}, 422),
    ("topk too large", {"data": jpeg_bytes(), "headers": {"content-type": "image/jpeg"}, "params": {"topk": "99"}}, 422),
    ("topk not a number", {"data": jpeg_bytes(), "headers": {"content-type": "image/jpeg"}, "params": {"topk": "x"}}, 422),
    ("multipart without file", {"files": {"other": ("a.txt", b"x", "text/plain")}}, 400),
])
def test_bad_input_gets_one_sentence_and_service_survives(served, name, kwargs, status):
    response = requests.post(f"{served}/predict", timeout=60, **kwargs)
    assert response.status_code == status, (name, response.text)
    error = response.json()["error"]
    assert isinstance(error, str) and error and "\n" not in error
    after = requests.post(f"{served}/predict", data=jpeg_bytes(), headers={"content-type": "image/jpeg"}, timeout=60)
    assert after.status_code == 200


def two_tone_jpeg(size=(120, 90)) -> bytes:
    buffer = io.BytesIO()
    two_tone(size).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def test_a_box_crops_the_photo_as_training_did_and_the_answer_names_it(served):
    photo = two_tone_jpeg()
    whole = requests.post(f"{served}/predict", files={"file": ("car.jpg", photo, "image/jpeg")}, timeout=60).json()
    assert whole["box"] is None
    by_query = requests.post(f"{served}/predict?box=2,3,50,80", files={"file": ("car.jpg", photo, "image/jpeg")},
                             timeout=60)
    assert by_query.status_code == 200, by_query.text
    by_form = requests.post(f"{served}/predict", files={"file": ("car.jpg", photo, "image/jpeg")},
                            data={"box": "2,3,50,80", "topk": "2"}, timeout=60)
    assert by_form.status_code == 200, by_form.text
    assert by_query.json()["box"] == by_form.json()["box"] == [2, 3, 50, 80]  # the checkpoint's box_margin is 0
    assert len(by_form.json()["predictions"]) == 2 and len(by_query.json()["predictions"]) == 4  # topk as a form field
    assert by_query.json()["predictions"][0] == by_form.json()["predictions"][0]
    assert by_query.json()["predictions"] != whole["predictions"]  # the red half is not the whole photo
    raw = requests.post(f"{served}/predict?box=100,50,300,200", data=photo, headers={"content-type": "image/jpeg"},
                        timeout=60)
    assert raw.status_code == 200 and raw.json()["box"] == [100, 50, 120, 90]  # clamped to the 120x90 photo


def test_one_deployment_answers_as_two_do(served, checkpoint):
    """deployments=one: the ingress replica holds the model (no call between deployments) and answers every route
    as the two-deployment app does: the same probabilities, the box, a refusal, several parts, /health."""
    from ray import serve

    from serve.app import build

    serve.run(build({"checkpoint": str(checkpoint), "deployments": "one", "num_cpus": "0.25", "max_files": "3"}),
              name="cars_one", route_prefix="/one")
    try:
        photo = two_tone_jpeg()
        for params in ({}, {"box": "2,3,50,80"}):
            one = requests.post(f"{served}/one/predict", params=params, files={"file": ("car.jpg", photo)}, timeout=60)
            two = requests.post(f"{served}/predict", params=params, files={"file": ("car.jpg", photo)}, timeout=60)
            assert one.status_code == 200, one.text
            assert one.json() == two.json()
        bad = requests.post(f"{served}/one/predict", data=b"not an image", headers={"content-type": "image/jpeg"},
                            timeout=60)
        assert bad.status_code == 400 and bad.json()["error"].startswith("the upload is not a usable image")
        several = requests.post(f"{served}/one/predict", files=[("file", ("a.jpg", photo)), ("file", ("b.txt", b"x"))],
                                timeout=60).json()
        assert [r["filename"] for r in several["results"]] == ["a.jpg", "b.txt"]
        assert several["results"][0]["predictions"] and several["results"][1]["error"]
        health = requests.get(f"{served}/one/health", timeout=60).json()
        assert health == requests.get(f"{served}/health", timeout=60).json()
        deployments = serve.status().applications["cars_one"].deployments
        assert set(deployments) == {"CarsAPI"}, "one deployment, no Classifier"
    finally:
        serve.delete("cars_one")


@pytest.mark.parametrize("name, params, data, parts, words", [
    ("three numbers", {"box": "1,2,3"}, None, 1, "box: a box is four numbers x1,y1,x2,y2 in pixels, got '1,2,3'"),
    ("not a number", None, {"box": "1,2,x,4"}, 1, "box: x2 is 'x', not a number"),
    ("empty box", {"box": "10,10,10,40"}, None, 1, "box: the box (10,10,10,40) is empty or inverted"),
    ("empty field", None, {"box": ""}, 1, "box: a box is four numbers"),
    ("outside the photo", {"box": "200,100,300,200"}, None, 1,
     "box does not fit the photo (bad box: (200,100,300,200) lies outside the 120x90 image)"),
    ("query and form", {"box": "1,2,30,40"}, {"box": "1,2,30,40"}, 1, "box is given 2 times"),
    ("topk twice", {"topk": "2"}, {"topk": "3"}, 1, "topk is given 2 times"),
    ("box twice in the query", {"box": ["1,2,30,40", "0,0,10,10"]}, None, 1, "box is given 2 times (2 as query parameter)"),
    ("topk form out of range", None, {"topk": "0"}, 1, "topk must be from 1 to 4, got 0"),
    ("box with two photos", {"box": "1,2,30,40"}, None, 2, "box applies to one photo, but the request has 2 'file' parts"),
    ("a misspelt setting", {"top_k": "3"}, None, 1, "unknown setting 'top_k' (query parameter); the settings are topk and box"),
    ("an unknown form field", None, {"crop": "1,2,30,40"}, 1, "unknown setting 'crop' (form field)"),
])
def test_a_bad_box_or_setting_gets_a_422_naming_it(served, name, params, data, parts, words):
    files = [("file", (f"{i}.jpg", two_tone_jpeg(), "image/jpeg")) for i in range(parts)]
    response = requests.post(f"{served}/predict", params=params, data=data, files=files, timeout=60)
    assert response.status_code == 422, (name, response.text)
    error = response.json()["error"]
    assert error.startswith(words) and "\n" not in error, (name, error)


def test_a_form_without_a_file_part_is_a_400_naming_the_fields_it_had(served):
    response = requests.post(f"{served}/predict", files={"top_k": (None, "3")}, timeout=60)  # multipart, no 'file'
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "the multipart form has no 'file' field with an image (its fields: 'top_k')"


def multipart(parts: list[tuple[str | None, bytes]], boundary: str = "cars-ray-test") -> tuple[bytes, dict]:
    """A multipart/form-data body whose parts are all named 'file'; a filename None leaves it out (RFC 7578
    allows it, as curl and several clients send it), "" sends it empty."""
    body = b""
    for filename, data in parts:
        disposition = 'form-data; name="file"' + ("" if filename is None else f'; filename="{filename}"')
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: image/jpeg\r\n\r\n".encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), {"content-type": f"multipart/form-data; boundary={boundary}"}


def test_several_file_parts_are_each_answered_in_order(served):
    one = requests.post(f"{served}/predict", files={"file": ("a.jpg", jpeg_bytes(seed=1), "image/jpeg")}, timeout=60).json()
    assert one["filename"] == "a.jpg" and len(one["predictions"]) == 4
    parts = [("a.jpg", jpeg_bytes(seed=1)), ("b.jpg", b"not an image"), ("c.jpg", jpeg_bytes(seed=2))]
    response = requests.post(f"{served}/predict", files=[("file", (n, d, "image/jpeg")) for n, d in parts], timeout=60)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["filename"] for r in results] == ["a.jpg", "b.jpg", "c.jpg"]
    assert results[1]["error"].startswith("the upload is not a usable image (unreadable") and not results[1]["predictions"]
    assert [p["class_id"] for p in results[0]["predictions"]] == [p["class_id"] for p in one["predictions"]]
    assert results[0]["predictions"][0]["probability"] == pytest.approx(one["predictions"][0]["probability"], abs=1e-4)
    assert len(results[2]["predictions"]) == 4 and not results[0]["error"]
    # Every result has the three keys; the one that does not apply is null (README: the answers).
    assert results[0]["error"] is None and results[1]["predictions"] is None and set(results[1]) == {"filename", "predictions", "error"}


def test_more_file_parts_than_the_limit_are_refused_naming_both(served):
    files = [("file", (f"{i}.jpg", jpeg_bytes(seed=i), "image/jpeg")) for i in range(4)]
    response = requests.post(f"{served}/predict", files=files, timeout=60)
    assert response.status_code == 413
    assert response.json() == {"error": "the request has 4 'file' parts; the limit is 3 per request: send the rest "
                                        "in further requests"}


@pytest.mark.parametrize("filename", [None, ""], ids=["no-filename", "empty-filename"])
def test_a_file_part_without_a_filename_is_classified(served, filename):
    body, headers = multipart([(filename, jpeg_bytes(seed=4))])
    response = requests.post(f"{served}/predict", data=body, headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["filename"] is None and len(response.json()["predictions"]) == 4
    body, headers = multipart([(filename, jpeg_bytes(seed=4)), ("x.jpg", jpeg_bytes(seed=5))])
    results = requests.post(f"{served}/predict", data=body, headers=headers, timeout=60).json()["results"]
    assert [r["filename"] for r in results] == [None, "x.jpg"] and all(len(r["predictions"]) == 4 for r in results)


@pytest.mark.parametrize("method, path, status, words", [
    ("get", "/nope", 404, "GET /nope: no such route; the routes are POST /predict"),
    ("get", "/predict", 405, "GET /predict: the method is not allowed on this route"),
    ("put", "/health", 405, "PUT /health: the method is not allowed on this route"),
])
def test_fastapis_own_errors_have_the_error_shape(served, method, path, status, words):
    response = getattr(requests, method)(f"{served}{path}", timeout=30)
    assert response.status_code == status and list(response.json()) == ["error"]
    assert response.json()["error"].startswith(words)


def test_validation_errors_have_the_error_shape():
    import asyncio

    from fastapi.exceptions import RequestValidationError
    from starlette.requests import Request

    from serve.app import validation_error

    request = Request({"type": "http", "method": "POST", "path": "/predict", "headers": [], "query_string": b""})
    problems = [{"loc": ("query", "topk"), "msg": "Input should be a valid integer", "type": "int_parsing"},
                {"loc": ("body",), "msg": "Field required", "type": "missing"}]
    response = asyncio.run(validation_error(request, RequestValidationError(problems)))
    assert response.status_code == 422
    assert json.loads(response.body) == {"error": "query.topk: Input should be a valid integer (and 1 more)"}


def test_bounded_concurrency_zero_errors(served):
    failures: list[str] = []
    payload = jpeg_bytes(seed=3)

    def client():
        with requests.Session() as session:
            for _ in range(25):
                response = session.post(f"{served}/predict", data=payload, headers={"content-type": "image/jpeg"}, timeout=60)
                if response.status_code != 200:
                    failures.append(response.text)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not failures and not any(t.is_alive() for t in threads)


def test_serve_config_matches_ray_schema():
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(yaml.safe_load((REPO / "serve" / "config.yaml").read_text()))
    assert config.applications[0].import_path == "serve.app:build"


def test_page_in_headless_chromium(served, tmp_path):
    node, chromium = shutil.which("node"), shutil.which("chromium")
    if not (node and chromium and (REPO / "tests" / "web" / "node_modules" / "playwright-core").is_dir()):
        pytest.skip("needs node, Debian chromium and tests/web/node_modules/playwright-core (installed by .ci/run)")
    image = tmp_path / "car.jpg"
    make_image(image, (160, 100), (200, 30, 30))
    shot = tmp_path / "page.png"
    proc = subprocess.run([node, "page_test.js", f"{served}/", str(image), str(shot)], cwd=REPO / "tests" / "web",
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(result["rows"]) == 4 and any(name in result["rows"][0] for name in CLASS_NAMES)
    assert "test_efficientnet" in result["model"] and shot.stat().st_size > 5000


def test_page_sends_a_dragged_box_in_headless_chromium(served, tmp_path):
    """Drop a photo: the whole photo is classified, with the hint that a box helps; drag a rectangle over its
    left (red) half: the request carries box= in the photo's own pixels and the answer changes."""
    node, chromium = shutil.which("node"), shutil.which("chromium")
    if not (node and chromium and (REPO / "tests" / "web" / "node_modules" / "playwright-core").is_dir()):
        pytest.skip("needs node, Debian chromium and tests/web/node_modules/playwright-core (installed by .ci/run)")
    image = tmp_path / "street.jpg"
    image.write_bytes(two_tone_jpeg((600, 300)))  # shown scaled down (max-height 280 px): the box is scaled back
    drag = (20, 10, 240, 250)
    proc = subprocess.run([node, "box_test.js", f"{served}/", str(image), str(tmp_path / "box.png"), *map(str, drag)],
                          cwd=REPO / "tests" / "web", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    shown = result["shown"]
    assert (shown["naturalWidth"], shown["naturalHeight"]) == (600, 300) and shown["height"] < 300
    sx, sy = 600 / shown["width"], 300 / shown["height"]
    box = [round(drag[0] * sx), round(drag[1] * sy), round(drag[2] * sx), round(drag[3] * sy)]
    sent = result["sent"]
    assert [form["entries"] for form in sent] == [[["file", "file:street.jpg"]],
                                                           [["file", "file:street.jpg"], ["box", ",".join(map(str, box))]]]
    assert all(form["url"].startswith("predict?topk=4") for form in result["sent"])
    assert result["wholeHint"].startswith("Tip: drag a rectangle around the car") and "trained on box crops" in result["model"]
    assert result["boxHint"].startswith(f"Classified the box {','.join(map(str, box))} of the photo")
    assert sent[0]["answer"]["box"] is None and sent[1]["answer"]["box"] == box  # margin 0, inside the photo
    # The answer changes (the untrained model's probabilities differ below the page's 0.1% rounding) and the page
    # shows the box's answer.
    whole, boxed = ([p["probability"] for p in form["answer"]["predictions"]] for form in sent)
    assert whole != boxed and len(result["boxRows"]) == 4
    assert result["boxRows"] == [f"{p['class_name']}{100 * p['probability']:.1f}%" for p in sent[1]["answer"]["predictions"]]


def test_cpu_replica_serves_the_checked_onnx_export_of_a_checkpoint(served, checkpoint):
    health = requests.get(f"{served}/health", timeout=30).json()
    assert health["backend"] == "onnx" and "(onnx)" in health["model"]
    cached = list((checkpoint / "onnx").glob("*.onnx"))
    assert len(cached) == 1 and not list((checkpoint / "onnx").glob("*unchecked*"))
    from cars_ray.inference.onnx import OnnxSession

    # a replica's capped session sleeps its idle threads (they would spin on cores the proxy and ingress share)
    capped = OnnxSession(str(cached[0]), num_threads=1).session.get_session_options()
    assert capped.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_backend_choice_overrides_and_refusals(checkpoint, tmp_path):
    from cars_ray.inference.model import choose_backend
    from serve.app import ServeArgs, replica_resources

    assert choose_backend(str(checkpoint), "torch") == "torch" and choose_backend(str(checkpoint), "onnx") == "onnx"
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"")
    with pytest.raises(ValueError, match="backend=torch needs a checkpoint directory"):
        choose_backend(str(onnx_file), "torch")
    with pytest.raises(ValueError, match="backend=onnx-int8 needs an int8 .onnx file"):
        choose_backend(str(checkpoint), "onnx-int8")
    with pytest.raises(ValueError, match="backend must be one of"):
        choose_backend(str(checkpoint), "tensorrt")
    # Fractional GPUs: four PyTorch replicas fit on one GPU; ONNX Runtime replicas take none.
    auto, onnx = ServeArgs(checkpoint=str(checkpoint)), ServeArgs(checkpoint=str(checkpoint), backend="onnx")
    assert replica_resources(auto, has_gpu=True) == {"num_cpus": 1.0, "num_gpus": 0.25}
    assert replica_resources(onnx, has_gpu=True)["num_gpus"] == 0
    assert replica_resources(auto, has_gpu=False)["num_gpus"] == 0
    assert replica_resources(ServeArgs(checkpoint=str(onnx_file)), has_gpu=True)["num_gpus"] == 0
    assert replica_resources(auto.model_copy(update={"num_gpus": 0.5}), has_gpu=True)["num_gpus"] == 0.5
    # serve/config.yaml's resources on a CPU-only or a GPU cluster: tests/test_deploy.py


def test_onnx_cache_refuses_an_export_that_fails_parity(checkpoint, tmp_path, monkeypatch):
    import shutil as sh

    from cars_ray.checkpoint import read_meta
    from cars_ray.errors import CheckpointError
    from cars_ray.inference import onnx

    copy = tmp_path / "ckpt"
    sh.copytree(checkpoint, copy, ignore=sh.ignore_patterns("onnx"))
    monkeypatch.setattr(onnx, "check_parity", lambda *a: onnx.ParityReport(0.5, 0.75, 16))
    with pytest.raises(CheckpointError, match="does not match PyTorch.*backend=torch"):
        onnx.cached_onnx(str(copy), read_meta(str(copy)))
    assert not list(copy.rglob("*.onnx"))
    monkeypatch.setattr(onnx.os, "access", lambda *a: False)  # a read-only checkpoint (root ignores modes)
    monkeypatch.setenv(onnx.CACHE_ENV, str(tmp_path / "cache"))
    assert onnx.onnx_cache_dir(str(copy)) == str(tmp_path / "cache" / "onnx")


@pytest.mark.gpu
def test_two_torch_replicas_share_one_gpu(ray_local, checkpoint):
    import torch
    from ray import serve

    from serve.app import build

    if not torch.cuda.is_available() or ray_local.cluster_resources().get("GPU", 0) < 1:
        pytest.skip("needs a CUDA device in the session's Ray")
    serve.run(build({"checkpoint": str(checkpoint), "min_replicas": "2", "max_replicas": "2", "num_cpus": "0.25"}),
              name="gpu_share", route_prefix="/gpu_share")
    try:
        replicas = serve.status().applications["gpu_share"].deployments["Classifier"].replica_states
        assert replicas.get("RUNNING") == 2
    finally:
        serve.delete("gpu_share")


def test_replica_killed_under_load_recovers(served):
    """16 clients on two replicas; one replica's process is killed: only requests in flight there may fail,
    the replica count comes back, and the requests after it succeed. README: clients retry a 5xx once.
    (Last in this module: it leaves the app with a replaced replica.)"""
    from serve.loadtest import load_with_replica_kill

    outcome = load_with_replica_kill(f"{served}/predict", jpeg_bytes(seed=5), "cars", clients=16, kill_after=1.0,
                                     after_recovery=1.0)
    print(outcome)
    assert outcome["recovered_s"] is not None and outcome["recovered_s"] < 90, outcome
    assert outcome["ok_before_kill"] > 0 and outcome["failed_until_recovered"] <= 16, outcome
    assert outcome["ok_after_recovery"] > 0 and outcome["failed_after_recovery"] == 0, outcome


def test_model_replica_decodes_bytes_batches_them_and_returns_refusals_as_values(checkpoint, monkeypatch):
    """In process, no Ray: the Classifier takes an upload's bytes (the ingress no longer sends a decoded
    150 KB array), answers concurrent uploads through one @serve.batch, and hands a bad upload back as a
    Refusal (status and sentence) for the ingress to answer, not as an exception."""
    import asyncio
    from types import SimpleNamespace

    import numpy as np
    import ray

    from serve.app import Classifier, Refusal, ServeArgs, replica_threads

    from ray import serve

    # what a replica's process would answer: its CPUs, and (for @serve.batch's check) its deployment config
    monkeypatch.setattr(ray, "get_runtime_context",
                        lambda: SimpleNamespace(get_assigned_resources=lambda: {"CPU": 1.75}))
    monkeypatch.setattr(serve, "get_replica_context",
                        lambda: SimpleNamespace(_deployment_config=SimpleNamespace(max_ongoing_requests=32)))
    replica = Classifier.func_or_class(ServeArgs(checkpoint=str(checkpoint), batching=True, max_batch_size=4,
                                                 batch_wait_timeout_s=0.05, backend="torch", max_pixels=12_000))
    batch_sizes: list[int] = []
    probs_of = replica.model.probs
    object.__setattr__(replica.model, "probs", lambda images: batch_sizes.append(len(images)) or probs_of(images))
    good, other = jpeg_bytes(seed=1), jpeg_bytes(seed=2)

    async def answers():
        return await asyncio.gather(*[replica.classify(data) for data in (good, other, good, b"not an image", b"")])

    results = asyncio.run(answers())
    assert [type(r) for r in results] == [tuple] * 3 + [Refusal] * 2
    assert [used for _, used in results[:3]] == [None] * 3  # no box: the whole photo
    probs = [p for p, _ in results[:3]]
    assert probs[0].shape == (len(CLASS_NAMES),) and probs[0].dtype == np.float32
    np.testing.assert_allclose(probs[0], probs[2], atol=1e-6)
    assert not np.allclose(probs[0], probs[1]) and abs(float(probs[0].sum()) - 1) < 1e-5
    assert sorted(batch_sizes, reverse=True)[0] == 3, batch_sizes  # the three images went in one batch
    assert results[3].status == 400 and results[3].message.startswith("the upload is not a usable image")
    # a decompression bomb: over max_pixels (12,000 here; the others are 120x90) is a 413, as at the ingress before
    big = asyncio.run(replica.classify(jpeg_bytes(size=(200, 100))))
    assert isinstance(big, Refusal) and big.status == 413
    assert [replica_threads(c) for c in (0.25, 0.5, 1, 1.75, 4)] == [1, 1, 1, 2, 4]
