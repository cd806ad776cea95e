"""Ray Serve application: an autoscaling car classifier behind a FastAPI ingress with a web page.

    serve run serve.app:build checkpoint=runs/train/best          # local
    serve deploy serve/config.yaml                                 # cluster

Routes: POST /predict (a raw image body, or multipart/form-data with one or several parts named ``file``;
``topk`` and, for one image, ``box=x1,y1,x2,y2`` as query parameters or form fields), GET /health, GET /classes,
GET / (a page to drop photos, drag a box over one and see its top-5), GET /docs (OpenAPI).
The checkpoint (or exported .onnx) brings its class names, preprocessing and training protocol.

Answers of POST /predict: one image (a raw body, or one ``file`` part) gets ``{"model", "filename", "box",
"predictions": [{"class_id", "class_name", "probability"}, ...]}`` (``filename``: the part's, or null; ``box``:
the crop classified, or null for the whole image);
several ``file`` parts (up to ``max_files``) get ``{"model", "results": [{"filename", "predictions", "error"},
...]}``, one result per part in the order sent, ``predictions`` or ``error`` null (the one that does not apply). Every 4xx answer, FastAPI's own
included (unknown route, wrong method, validation), is ``{"error": "<one sentence>"}``.
"""


import asyncio
import dataclasses
import os
from importlib import resources
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from cars_ray.data.images import parse_box
from cars_ray.errors import BoxError, ImageError
from cars_ray.preprocessing import Preprocessing

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MAX_FILES = 8  # 'file' parts answered in one request; more get a 413 naming the count
ROUTES = "POST /predict, GET /health, GET /classes, GET / (the page), GET /docs"
IMAGE_TYPES = ("image/", "application/octet-stream")


class ClassScore(BaseModel):
    class_id: int
    class_name: str
    probability: float


class Prediction(BaseModel):
    model: str
    filename: str | None = None  # the multipart part's filename; null for a raw body or a part without one
    # The crop classified, [left, top, right, bottom] in whole pixels of the upright photo: the request's box grown
    # by the model's box_margin and clamped to the photo, as training cropped. Null: the whole photo.
    box: list[int] | None = None
    predictions: list[ClassScore]


class PartResult(BaseModel):
    filename: str | None
    predictions: list[ClassScore] | None = None  # or, for a part that is not a usable image:
    error: str | None = None


class Predictions(BaseModel):
    """The answer to several 'file' parts: one result per part, in the order sent."""
    model: str
    results: list[PartResult]


class ErrorBody(BaseModel):
    error: str


@serve.deployment(name="Classifier", max_ongoing_requests=32)
class Classifier:
    """A model replica; concurrent requests are grouped into one forward pass by ``@serve.batch``."""

    def __init__(self, model_path: str, batching: bool = True, max_batch_size: int = 16,
                 batch_wait_timeout_s: float = 0.01, backend: str = "auto"):
        import ray

        from cars_ray.evaluate.predictor import load_backend

        # ONNX Runtime gets as many threads as the replica has CPUs, so replicas sharing a machine do not
        # oversubscribe its cores; a checkpoint on a CPU replica runs its cached, parity-checked ONNX export.
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        self.backend = load_backend(model_path, backend=backend, num_threads=max(1, round(cpus)))
        self.batching = batching
        self.predict_batched.set_max_batch_size(max_batch_size)
        self.predict_batched.set_batch_wait_timeout_s(batch_wait_timeout_s)

    def info(self) -> dict[str, Any]:
        return {"model": self.backend.name, "backend": self.backend.kind, "class_names": self.backend.class_names,
                "preprocessing": self.backend.preprocessing.to_dict()}

    async def predict(self, image: np.ndarray) -> np.ndarray:
        if self.batching:
            return await self.predict_batched(image)
        return self.backend.probs(image[None])[0]

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def predict_batched(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return list(self.backend.probs(np.stack(images)))


api = FastAPI(title="cars_ray classifier", description="Fine-grained car model recognition (Stanford Cars classes).")


@api.exception_handler(StarletteHTTPException)
async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """FastAPI's own 4xx/5xx (unknown route, wrong method) in the shape of every error: {"error": sentence}."""
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 404:
        message = f"{where}: no such route; the routes are {ROUTES}"
    elif exc.status_code == 405:
        message = f"{where}: the method is not allowed on this route; the routes are {ROUTES}"
    else:
        message = f"{where}: {exc.detail}"
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=getattr(exc, "headers", None))


@api.exception_handler(RequestValidationError)
async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's request validation (422) as {"error": sentence}: the first problem, where it is."""
    problems = exc.errors()
    first = problems[0] if problems else {}
    where = ".".join(str(part) for part in first.get("loc", ())) or "the request"
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}{more}"}, status_code=422)


class UserInputError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def multipart_files(content_type: str, body: bytes) -> tuple[list[tuple[str | None, bytes]], dict[str, list[str]]]:
    """(filename, bytes) of every part named ``file`` of a multipart/form-data ``body``, in order, read with
    python-multipart (the parser Starlette uses) so that a part without a filename, or with an empty one,
    is a file like any other (RFC 7578 allows it; Starlette's form would turn it into text). The filename
    is None when the part has none. Also the other parts, as text by name (``topk``, ``box``). Raises
    UserInputError(400) for a body that is not multipart or has no 'file' part."""
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header

    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        raise UserInputError(400, "the multipart/form-data content type has no boundary")
    parts: list[dict[str, Any]] = []
    field, value = bytearray(), bytearray()

    def header_end() -> None:
        parts[-1]["headers"][bytes(field).strip().lower()] = bytes(value).strip()
        field.clear()
        value.clear()

    parser = MultipartParser(boundary, {
        "on_part_begin": lambda: parts.append({"headers": {}, "data": bytearray()}),
        "on_part_data": lambda data, start, end: parts[-1]["data"].extend(data[start:end]),
        "on_header_field": lambda data, start, end: field.extend(data[start:end]),
        "on_header_value": lambda data, start, end: value.extend(data[start:end]),
        "on_header_end": header_end,
    })
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as err:
        raise UserInputError(400, f"the multipart/form-data body cannot be parsed ({err})") from None
    files, fields = [], {}
    for part in parts:
        _, options = parse_options_header(part["headers"].get(b"content-disposition", b""))
        if options.get(b"name") == b"file":
            filename = options.get(b"filename")
            files.append((filename.decode("utf-8", "replace") if filename else None, bytes(part["data"])))
        elif options.get(b"name"):
            name = options[b"name"].decode("utf-8", "replace")
            fields.setdefault(name, []).append(bytes(part["data"]).decode("utf-8", "replace"))
    if not files:
        raise UserInputError(400, "the multipart form has no 'file' field with an image")
    return files, fields


def one_setting(name: str, query: str | None, fields: dict[str, list[str]]) -> str | None:
    """The value of a request setting (``topk``, ``box``) given as a query parameter or as a form field, or
    None; given twice (both ways, or one field repeated) is a 422 naming it, never a silent choice."""
    given = ([query] if query is not None else []) + fields.get(name, [])
    if len(given) > 1:
        raise UserInputError(422, f"{name} is given {len(given)} times (query parameter and form fields); give it once")
    return given[0] if given else None


def request_box(text: str | None) -> tuple[float, float, float, float] | None:
    """The ``box`` setting as (x1, y1, x2, y2), or None when absent; a malformed or empty one is a 422."""
    if text is None:
        return None
    try:
        return parse_box(text, "box")
    except BoxError as err:
        raise UserInputError(422, f"{err} (box=x1,y1,x2,y2 in pixels of the uploaded photo)") from None


@serve.deployment(name="CarsAPI", max_ongoing_requests=64)
@serve.ingress(api)
class CarsAPI:
    def __init__(self, classifier: DeploymentHandle, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 max_pixels: int = DEFAULT_MAX_PIXELS, max_files: int = DEFAULT_MAX_FILES):
        self.classifier = classifier
        self.max_body_bytes = max_body_bytes
        self.max_pixels = max_pixels
        self.max_files = max_files
        self._info: dict[str, Any] | None = None

    async def info(self) -> dict[str, Any]:
        if self._info is None:
            info = await self.classifier.info.remote()
            preprocessing = Preprocessing.from_dict(info["preprocessing"], "the model replica")
            # A request's box is on the photo as the user sees it (the page draws it over the shown, upright
            # photo), whatever frame the training annotations used; margin and clamping stay the model's.
            self._info = {**info, "preprocessing": dataclasses.replace(preprocessing, box_frame="upright"),
                          "protocol": preprocessing.protocol}
        return self._info

    @api.get("/health")
    async def health(self) -> dict[str, Any]:
        """The model, its backend, class count and training protocol ("box crops" or "whole images")."""
        info = await self.info()
        return {"status": "ok", "model": info["model"], "backend": info["backend"], "num_classes": len(info["class_names"]),
                "protocol": info["protocol"]}

    @api.get("/classes")
    async def classes(self) -> dict[str, Any]:
        info = await self.info()
        return {"model": info["model"],
                "classes": [{"class_id": i + 1, "class_name": n} for i, n in enumerate(info["class_names"])]}

    @api.get("/", response_class=HTMLResponse)
    async def page(self) -> str:
        return resources.files("serve").joinpath("page.html").read_text(encoding="utf-8")

    @api.post("/predict", response_model=Prediction | Predictions,
              responses={400: {"model": ErrorBody}, 404: {"model": ErrorBody}, 405: {"model": ErrorBody},
                         413: {"model": ErrorBody}, 415: {"model": ErrorBody}, 422: {"model": ErrorBody}})
    async def predict(self, request: Request, topk: str | None = None, box: str | None = None):
        """One image (raw body or one 'file' part): Prediction, of the crop to ``box`` when one is given
        (query parameter or form field ``box=x1,y1,x2,y2``). Several 'file' parts: Predictions, a result
        (predictions, or the error of that part) per part in the order sent, up to max_files."""
        try:
            info = await self.info()
            uploads, fields = await self.read_uploads(request)
            k = self.parse_topk(one_setting("topk", topk, fields), len(info["class_names"]))
            crop_box = request_box(one_setting("box", box, fields))
            if crop_box is not None and len(uploads) > 1:
                raise UserInputError(422, f"box applies to one photo, but the request has {len(uploads)} 'file' "
                                          "parts: send each photo with its box in a request of its own")
            if len(uploads) == 1:
                filename, data = uploads[0]
                if not data:
                    raise UserInputError(400, "the request has no image: the body (or the 'file' field) is empty")
                image, used = await self.decode_async(data, info["preprocessing"], crop_box)
        except UserInputError as err:
            return JSONResponse({"error": str(err)}, status_code=err.status)
        if len(uploads) == 1:
            return {"model": info["model"], "filename": filename, "box": list(used) if used else None,
                    "predictions": self.top_classes(await self.classifier.predict.remote(image), k, info)}
        return {"model": info["model"], "results": await asyncio.gather(
            *[self.predict_part(filename, data, k, info) for filename, data in uploads])}

    async def predict_part(self, filename: str | None, data: bytes, k: int, info: dict[str, Any]) -> dict[str, Any]:
        """One part of several: its predictions, or the sentence saying why it is not a usable image."""
        try:
            if not data:
                raise UserInputError(400, "the part is empty")
            image, _ = await self.decode_async(data, info["preprocessing"], None)
        except UserInputError as err:
            return {"filename": filename, "error": str(err)}
        return {"filename": filename, "predictions": self.top_classes(await self.classifier.predict.remote(image), k, info)}

    @staticmethod
    def top_classes(probs: np.ndarray, k: int, info: dict[str, Any]) -> list[dict[str, Any]]:
        order = np.argsort(-probs)[:k]
        return [{"class_id": int(i) + 1, "class_name": info["class_names"][i], "probability": float(probs[i])}
                for i in order]

    async def decode_async(self, data: bytes, preprocessing: Preprocessing,
                           box: tuple[float, float, float, float] | None) -> tuple[np.ndarray, tuple | None]:
        return await asyncio.get_running_loop().run_in_executor(None, self.decode, data, preprocessing, box)

    @staticmethod
    def parse_topk(topk: str | None, num_classes: int) -> int:
        if topk is None:
            return min(5, num_classes)
        try:
            k = int(topk)
        except ValueError:
            raise UserInputError(422, f"topk must be a whole number from 1 to {num_classes}, got {topk!r}") from None
        if not 1 <= k <= num_classes:
            raise UserInputError(422, f"topk must be from 1 to {num_classes}, got {k}")
        return k

    async def read_uploads(self, request: Request) -> tuple[list[tuple[str | None, bytes]], dict[str, list[str]]]:
        """(filename, bytes) of each image sent: the raw body (filename None), or every multipart part
        named 'file', in order; more than ``max_files`` parts is a 413 naming the count and the limit. And
        the form's other fields by name (none for a raw body)."""
        content_type = request.headers.get("content-type", "").lower()
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise UserInputError(413, f"the request body is {int(declared)} bytes; the limit is {self.max_body_bytes}")
        if content_type.startswith("multipart/form-data"):
            files, fields = multipart_files(request.headers.get("content-type", ""), await self.read_body(request))
            if len(files) > self.max_files:
                raise UserInputError(413, f"the request has {len(files)} 'file' parts; the limit is {self.max_files} "
                                          "per request: send the rest in further requests")
            return files, fields
        if content_type.startswith(IMAGE_TYPES) or not content_type:
            return [(None, await self.read_body(request))], {}
        raise UserInputError(415, f"content type {content_type!r} is not accepted; send an image body "
                                  "(image/jpeg, image/png, ...) or multipart/form-data with a 'file' field")

    async def read_body(self, request: Request) -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise UserInputError(413, f"the request body exceeds the limit of {self.max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def decode(self, data: bytes, preprocessing: Preprocessing,
               box: tuple[float, float, float, float] | None) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:
        """The shared decode (:meth:`Preprocessing.decode_crop`: the training crop when ``box`` is given) and the
        crop it took; a box wholly outside the photo is a 422, an unusable image a 400 (413 when too large)."""
        try:
            return preprocessing.decode_crop(data, box, max_pixels=self.max_pixels)
        except BoxError as err:
            raise UserInputError(422, f"box does not fit the photo ({err})") from None
        except ImageError as err:
            status = 413 if str(err).startswith("too large") else 400
            raise UserInputError(status, f"the upload is not a usable image ({err})") from None


DEFAULT_GPU_SHARE = 0.25  # a quarter of a GPU per replica: up to four replicas autoscale on one GPU


def replica_resources(args: dict[str, str], path: str, backend: str, has_gpu: bool) -> dict[str, float]:
    """A Classifier replica's CPUs (also ONNX Runtime's threads) and GPU share: 0.25 of a GPU where the
    cluster has GPUs and the replica runs PyTorch, none for ONNX Runtime (it runs on CPU here)."""
    runs_torch = backend in ("auto", "torch") and not path.endswith(".onnx")
    default_gpus = DEFAULT_GPU_SHARE if has_gpu and runs_torch else 0
    return {"num_cpus": float(args.get("num_cpus", 1)), "num_gpus": float(args.get("num_gpus", default_gpus))}


def logging_config(args: dict[str, str]) -> dict[str, Any]:
    return {"enable_access_log": str(args.get("access_log", "true")).lower() == "true"}


def build(args: dict[str, str]) -> serve.Application:
    """Application builder for ``serve run serve.app:build checkpoint=PATH [key=value ...]``.

    Arguments: checkpoint (a checkpoint directory or .onnx file; required), backend (auto, torch, onnx,
    onnx-int8; auto runs PyTorch on a GPU replica and ONNX Runtime on a CPU one), batching (true/false),
    max_batch_size, batch_wait_timeout_s, max_body_bytes, max_pixels, max_files (images answered per request, default
    8), min_replicas, max_replicas,
    target_ongoing_requests, num_cpus (per replica; also ONNX Runtime's thread count), num_gpus (per
    replica; default 0.25 when the cluster has GPUs and the replica runs PyTorch, else 0),
    health_check_period_s (how soon a dead replica is noticed and replaced; Serve's 10 s), access_log
    (true/false: Serve's line per request, which costs CPU at high request rates). Replica
    settings in a serve config's ``deployments:`` override these.
    """
    import ray

    from cars_ray.evaluate.predictor import choose_backend

    path = args.get("checkpoint")
    if not path:
        raise ValueError("serve.app:build needs checkpoint=PATH (a checkpoint directory or an .onnx file)")
    if not os.path.exists(path):
        raise ValueError(f"checkpoint {path} does not exist")
    path = os.path.abspath(path)
    backend = str(args.get("backend", "auto"))
    choose_backend(path, backend)  # fails here, in one sentence, on a backend the model cannot run on
    has_gpu = ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0
    classifier = Classifier.options(
        autoscaling_config={
            "min_replicas": int(args.get("min_replicas", 1)),
            "max_replicas": int(args.get("max_replicas", 2)),
            "target_ongoing_requests": float(args.get("target_ongoing_requests", 4)),
            "upscale_delay_s": float(args.get("upscale_delay_s", 3)),
            "downscale_delay_s": float(args.get("downscale_delay_s", 15)),
        },
        ray_actor_options=replica_resources(args, path, backend, has_gpu),
        health_check_period_s=float(args.get("health_check_period_s", 10)),
        logging_config=logging_config(args),
    ).bind(path, str(args.get("batching", "true")).lower() == "true", int(args.get("max_batch_size", 16)),
           float(args.get("batch_wait_timeout_s", 0.01)), backend)
    return CarsAPI.options(ray_actor_options={"num_cpus": 0.25}, logging_config=logging_config(args)).bind(
        classifier, int(args.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES)), int(args.get("max_pixels", DEFAULT_MAX_PIXELS)),
        int(args.get("max_files", DEFAULT_MAX_FILES)))
