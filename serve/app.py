"""Ray Serve application: an autoscaling car classifier behind a FastAPI ingress with a web page.

    serve run --address local serve.app:build checkpoint=runs/train/best   # local: a Ray of its own
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
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from cars_ray.config import BackendName
from cars_ray.data.images import parse_box
from cars_ray.errors import BoxError, ImageError
from cars_ray.preprocessing import Preprocessing

DEFAULT_GPU_SHARE = 0.25  # a quarter of a GPU per replica: up to four replicas autoscale on one GPU
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


class ServeArgs(BaseModel):
    """The arguments of ``serve.app:build`` (``serve run serve.app:build checkpoint=PATH key=value ...`` or a
    serve config's ``args:``), typed: Ray Serve validates them against this model before calling the builder,
    and each setting has its one default here. Replica settings in a serve config's ``deployments:`` override
    the replica ones."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: str = Field(description="a checkpoint directory or an exported .onnx file")
    backend: BackendName = Field("auto", description="auto runs PyTorch on a GPU replica, ONNX Runtime on a CPU one")
    batching: bool = Field(True, description="group concurrent requests into one forward pass (@serve.batch)")
    max_batch_size: int = Field(16, ge=1, description="images per forward pass, at most")
    batch_wait_timeout_s: float = Field(0.01, ge=0, description="seconds a batch waits to fill")
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1, description="largest request body; larger gets a 413")
    max_pixels: int = Field(40_000_000, ge=1, description="largest decoded image; larger gets a 413")
    max_files: int = Field(8, ge=1, description="'file' parts answered in one request; more get a 413 naming the count")
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(4, gt=0)
    upscale_delay_s: float = Field(3, ge=0)
    downscale_delay_s: float = Field(15, ge=0)
    num_cpus: float = Field(1, gt=0, description="per replica; also ONNX Runtime's thread count")
    num_gpus: float | None = Field(None, ge=0, description=f"per replica; unset: {DEFAULT_GPU_SHARE} where the cluster has GPUs "
                                                           "and the replica runs PyTorch, else 0")
    health_check_period_s: float = Field(10, gt=0, description="how soon a dead replica is noticed and replaced")
    access_log: bool = Field(True, description="Serve's line per request (costs CPU at high request rates)")
    deployments: Literal["one", "two"] = Field(
        "two", description="two: the ingress (HTTP, the page) and the model replicas scale apart, the model "
                           "replica on a GPU where there is one; one: the ingress replica holds the model and "
                           "decodes and infers itself (no call between deployments); it takes the model "
                           "replica's resources and autoscaling")

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> "ServeArgs":
        """Pydantic's validation, its first problem as one sentence (ValueError) naming the argument."""
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as err:
            problems = err.errors()
            first = problems[0]
            name = ".".join(str(part) for part in first["loc"])
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            if first["type"] == "missing" and name == "checkpoint":
                message = "serve.app:build needs checkpoint=PATH (a checkpoint directory or an .onnx file)"
            elif first["type"] == "extra_forbidden":
                message = f"serve.app:build has no argument {name!r}; the arguments are {', '.join(cls.model_fields)}"
            else:
                message = f"serve.app:build argument {name}={first.get('input')!r}: {first['msg']}"
            raise ValueError(message + more) from None


def _default(name: str) -> Any:
    return ServeArgs.model_fields[name].default


def replica_cpus() -> float:
    """The CPUs Ray gave this replica (a serve config's ``deployments:`` may override the builder's)."""
    import ray

    return ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)


def replica_threads(num_cpus: float) -> int:
    """ONNX Runtime's intra-op threads in a replica of ``num_cpus`` CPUs: the CPUs rounded, at least one
    (1.75 CPUs -> 2 threads, 0.5 -> 1), so replicas sharing a machine do not oversubscribe its cores."""
    return max(1, round(num_cpus))


class UserInputError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Refusal:
    """Why an upload is not a usable image: the HTTP status and the sentence, as the model replica returns them
    to the ingress (a value, not an exception: no traceback is built, logged or pickled per bad image)."""
    status: int
    message: str


def decode_upload(data: bytes, preprocessing: Preprocessing, max_pixels: int,
                  box: tuple[float, float, float, float] | None = None) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:
    """An upload's bytes as the model's uint8 (resize, resize, 3) input and the crop taken
    (:meth:`Preprocessing.decode_crop`: the training crop when ``box`` is given, else None); raises
    UserInputError: 422 for a box wholly outside the photo, 413 for an image over ``max_pixels`` (a
    decompression bomb), 400 for anything unreadable."""
    try:
        return preprocessing.decode_crop(data, box, max_pixels=max_pixels)
    except BoxError as err:
        raise UserInputError(422, f"box does not fit the photo ({err})") from None
    except ImageError as err:
        status = 413 if str(err).startswith("too large") else 400
        raise UserInputError(status, f"the upload is not a usable image ({err})") from None


class ModelReplica:
    """A model replica (the class of the ``Classifier`` deployment, held in process by the ingress with
    deployments=one): takes an upload's bytes, decodes them, and groups concurrent images into one forward pass
    with ``@serve.batch``.

    The replica decodes, not the ingress. The bytes it is sent are usually far smaller than the decoded array
    (benchmarks/serve_load.py's 6.8 KB JPEG against 150 KB at 224 px). Such an array is over Ray's 100 KB inline
    limit, so before this it went through the object store on every request. A photo larger than the array
    goes through the object store either way. Decode and forward pass run in worker threads (Pillow and ONNX
    Runtime release the GIL), so the replica's event loop keeps taking requests, and forming the next batch,
    while a batch runs.
    """

    def __init__(self, args: ServeArgs):
        from cars_ray.inference.model import LoadedModel

        # ONNX Runtime gets as many threads as the replica has CPUs, so replicas sharing a machine do not
        # oversubscribe its cores; a checkpoint on a CPU replica runs its cached, parity-checked ONNX export.
        self.model = LoadedModel.open(args.checkpoint, args.backend, num_threads=replica_threads(replica_cpus()))
        self.max_pixels = args.max_pixels
        # A request's box is on the photo as the user sees it (the page draws it over the shown, upright photo),
        # whatever frame the training annotations used; margin and clamping stay the model's.
        self.request_preprocessing = dataclasses.replace(self.model.preprocessing, box_frame="upright")
        self.batching = args.batching
        # The decorator holds the defaults (the same values); the replica's own arguments take effect here.
        self.predict_batched.set_max_batch_size(args.max_batch_size)
        self.predict_batched.set_batch_wait_timeout_s(args.batch_wait_timeout_s)

    def info(self) -> dict[str, Any]:
        return {"model": self.model.name, "backend": self.model.kind, "class_names": self.model.class_names,
                "preprocessing": self.model.preprocessing.to_dict(), "protocol": self.model.preprocessing.protocol}

    async def classify(self, data: bytes, box: tuple[float, float, float, float] | None = None
                       ) -> tuple[np.ndarray, tuple[int, int, int, int] | None] | Refusal:
        """Class probabilities, float32 (num_classes,), of one upload's bytes (of its crop to ``box``, in the
        upright photo's pixels) and the crop taken (None: the whole photo); a Refusal when they are not a usable
        image (empty, not an image, truncated, over max_pixels, an extreme aspect ratio) or the box misses it."""
        try:
            image, used = await asyncio.to_thread(decode_upload, data, self.request_preprocessing, self.max_pixels, box)
        except UserInputError as err:
            return Refusal(err.status, str(err))
        if self.batching:
            return await self.predict_batched(image), used
        return (await asyncio.to_thread(self.model.probs, image[None]))[0], used

    @serve.batch(max_batch_size=_default("max_batch_size"), batch_wait_timeout_s=_default("batch_wait_timeout_s"))
    async def predict_batched(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return list(await asyncio.to_thread(self.model.probs, np.stack(images)))


# The deployment wraps a class importable by name, so the ingress can hold one in process (deployments=one): code
# that refers to a Deployment object pickles it, and Serve then gives its class back as an unpickled copy.
Classifier = serve.deployment(name="Classifier", max_ongoing_requests=32)(ModelReplica)

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
        given = f" (its fields: {', '.join(map(repr, fields))})" if fields else ""  # top_k=3 alone: say what came
        raise UserInputError(400, f"the multipart form has no 'file' field with an image{given}")
    return files, fields


SETTINGS = ("topk", "box")  # what POST /predict reads from the query string or the form, besides the 'file' parts


def known_settings(query: list[str], fields: dict[str, list[str]]) -> None:
    """A query parameter or form field that is not a setting (``top_k`` for ``topk``) is a 422 naming it, never
    ignored: the answer would otherwise use the default the user meant to change."""
    unknown = [(name, "query parameter") for name in dict.fromkeys(query) if name not in SETTINGS]
    unknown += [(name, "form field") for name in fields if name not in SETTINGS]
    if unknown:
        named = ", ".join(f"{name!r} ({kind})" for name, kind in unknown)
        raise UserInputError(422, f"unknown setting {named}; the settings are {' and '.join(SETTINGS)}, and the "
                                  "photos are sent as the body or as 'file' parts")


def one_setting(name: str, query: list[str], fields: dict[str, list[str]]) -> str | None:
    """The value of a request setting (``topk``, ``box``) given as a query parameter (``query``: every value the
    query string holds for it) or as a form field, or None; given more than once (both ways, or either one
    repeated) is a 422 naming it and where it was given, never a silent choice."""
    given = list(query) + fields.get(name, [])
    if len(given) > 1:
        where = " and ".join(f"{count} as {kind}" for count, kind in
                             ((len(query), "query parameter"), (len(fields.get(name, [])), "form field")) if count)
        raise UserInputError(422, f"{name} is given {len(given)} times ({where}); give it once")
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
    def __init__(self, classifier: DeploymentHandle | ServeArgs, max_body_bytes: int, max_files: int):
        # deployments=one: the ServeArgs, and this replica holds the model itself (the same Classifier, in process)
        self.classifier = classifier if isinstance(classifier, DeploymentHandle) else None
        self.model = ModelReplica(classifier) if self.classifier is None else None
        self.max_body_bytes = max_body_bytes
        self.max_files = max_files
        self._info: dict[str, Any] | None = None

    async def info(self) -> dict[str, Any]:
        if self._info is None:
            self._info = self.model.info() if self.model else await self.classifier.info.remote()
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
        # topk and box are declared for the OpenAPI page; their values are read from the query string below
        """One image (raw body or one 'file' part): Prediction, of the crop to ``box`` when one is given
        (query parameter or form field ``box=x1,y1,x2,y2``). Several 'file' parts: Predictions, a result
        (predictions, or the error of that part) per part in the order sent, up to max_files."""
        try:
            info = await self.info()
            uploads, fields = await self.read_uploads(request)
            known_settings(list(request.query_params.keys()), fields)
            # every value of the query string, not FastAPI's last one: ?box=a&box=b is a 422, never a silent choice
            k = self.parse_topk(one_setting("topk", request.query_params.getlist("topk"), fields), len(info["class_names"]))
            crop_box = request_box(one_setting("box", request.query_params.getlist("box"), fields))
            if crop_box is not None and len(uploads) > 1:
                raise UserInputError(422, f"box applies to one photo, but the request has {len(uploads)} 'file' "
                                          "parts: send each photo with its box in a request of its own")
            if len(uploads) == 1:
                filename, data = uploads[0]
                if not data:
                    raise UserInputError(400, "the request has no image: the body (or the 'file' field) is empty")
                probs, used = await self.classify(data, crop_box)
        except UserInputError as err:
            return JSONResponse({"error": str(err)}, status_code=err.status)
        if len(uploads) == 1:
            return {"model": info["model"], "filename": filename, "box": list(used) if used else None,
                    "predictions": self.top_classes(probs, k, info)}
        return {"model": info["model"], "results": await asyncio.gather(
            *[self.predict_part(filename, data, k, info) for filename, data in uploads])}

    async def predict_part(self, filename: str | None, data: bytes, k: int, info: dict[str, Any]) -> dict[str, Any]:
        """One part of several: its predictions, or the sentence saying why it is not a usable image."""
        try:
            if not data:
                raise UserInputError(400, "the part is empty")
            probs, _ = await self.classify(data)
        except UserInputError as err:
            return {"filename": filename, "error": str(err)}
        return {"filename": filename, "predictions": self.top_classes(probs, k, info)}

    async def classify(self, data: bytes, box: tuple[float, float, float, float] | None = None
                       ) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:
        """The model replica's probabilities for one upload's bytes (cropped to ``box``) and the crop it took;
        UserInputError where it refused them."""
        result = await (self.model.classify(data, box) if self.model else self.classifier.classify.remote(data, box))
        if isinstance(result, Refusal):
            raise UserInputError(result.status, result.message)
        return result

    @staticmethod
    def top_classes(probs: np.ndarray, k: int, info: dict[str, Any]) -> list[dict[str, Any]]:
        order = np.argsort(-probs)[:k]
        return [{"class_id": int(i) + 1, "class_name": info["class_names"][i], "probability": float(probs[i])}
                for i in order]

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


def replica_resources(args: ServeArgs, has_gpu: bool) -> dict[str, float]:
    """A Classifier replica's CPUs (also ONNX Runtime's threads) and GPU share: ``num_gpus``, or 0.25 of a GPU
    where the cluster has GPUs and the replica runs PyTorch, none for ONNX Runtime (it runs on CPU here)."""
    from cars_ray.inference.model import choose_backend

    runs_torch = choose_backend(args.checkpoint, args.backend, has_gpu=has_gpu) == "torch"
    gpus = args.num_gpus if args.num_gpus is not None else DEFAULT_GPU_SHARE if has_gpu and runs_torch else 0
    return {"num_cpus": float(args.num_cpus), "num_gpus": float(gpus)}


def logging_config(args: ServeArgs) -> dict[str, Any]:
    return {"enable_access_log": args.access_log}


def build(args: ServeArgs) -> serve.Application:
    """Application builder for ``serve run serve.app:build checkpoint=PATH [key=value ...]``: the arguments and
    their defaults are :class:`ServeArgs` (Ray Serve validates them; a dict, as tests pass, is validated here).
    Raises ValueError in one sentence for a bad argument, a missing checkpoint or a backend it cannot run on."""
    import ray

    from cars_ray.inference.model import choose_backend

    if not isinstance(args, ServeArgs):
        args = ServeArgs.model_validate(args)
    if not os.path.exists(args.checkpoint):
        raise ValueError(f"checkpoint {args.checkpoint} does not exist")
    args = args.model_copy(update={"checkpoint": os.path.abspath(args.checkpoint)})
    choose_backend(args.checkpoint, args.backend)  # fails here, in one sentence, on a backend the model cannot run on
    has_gpu = ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0
    model_replicas = {
        "autoscaling_config": {
            "min_replicas": args.min_replicas,
            "max_replicas": args.max_replicas,
            "target_ongoing_requests": args.target_ongoing_requests,
            "upscale_delay_s": args.upscale_delay_s,
            "downscale_delay_s": args.downscale_delay_s,
        },
        "ray_actor_options": replica_resources(args, has_gpu),
        "health_check_period_s": args.health_check_period_s,
        "logging_config": logging_config(args),
    }
    if args.deployments == "one":
        return CarsAPI.options(**model_replicas).bind(args, args.max_body_bytes, args.max_files)
    classifier = Classifier.options(**model_replicas).bind(args)
    return CarsAPI.options(ray_actor_options={"num_cpus": 0.25}, logging_config=logging_config(args)).bind(
        classifier, args.max_body_bytes, args.max_files)
