"""The HTTP app of `lamina serve`: POST /predict (JSON rows or one multipart form), GET /health,
GET /metadata, GET / (a web page for the model) and POST /explain.

Every refusal is a 4xx whose message names the field; an unexpected error is logged with its
traceback on the server and answered with a 500 that carries none. Bodies are parsed, validated
and decoded in a small thread pool, never on the event loop: /health answers while they run (a small
JSON body without files is parsed on the loop: it takes less time than the hop to a thread).
"""
from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import AsyncIterator
from urllib.parse import parse_qsl

import pandas as pd
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import ValidationError

from lamina.api import FAST_ROWS
from lamina.errors import ConfigError, DataError
from lamina.features.request import OVER_BUDGET, Budget
from lamina.serving import page, schema
from lamina.serving.batcher import SMALL_ROWS, Allowance, Batcher, Busy
from lamina.version import __version__

log = logging.getLogger("lamina.serve")


@dataclass
class Settings:
    """The limits and batching of a server (the `lamina serve` flags)."""

    max_batch_rows: int = 256  # most rows merged into one Model.predict call
    fast_rows: int = FAST_ROWS  # a batch of at most this many rows takes Model.predict_rows (no DataFrame)
    batch_wait_ms: float = 2.0  # under concurrent load, how long a batch waits for more requests to join
    # a request of at most this many rows (up to batcher.SMALL_ROWS), alone in the server, is predicted
    # on the event loop when the model is fast (0: always through the batcher's thread)
    inline_rows: int = SMALL_ROWS
    max_request_rows: int = 1000  # most rows in one request
    max_body_bytes: int = 10 * 2 ** 20  # largest request body (JSON or multipart, images included)
    max_waiting: int = 1000  # requests queued beyond this get 503
    max_image_pixels: int = 25_000_000  # largest image (width x height, read from its header before decoding)
    max_request_pixels: int = 50_000_000  # all the images of one request, in pixels
    max_request_samples: int = 50_000_000  # all the sounds of one request, in samples (channels included)
    # decoded pixels and samples of all the requests in flight together (each holds its share from
    # decoding until answered; at least one request's budget): bounds the memory decoded files take
    max_decoded_pixels: int = 200_000_000
    max_decoded_samples: int = 200_000_000
    decode_threads: int = 2  # requests parsed and decoded at once, off the event loop


# Options that name files or folders of the server (a training config's root:, an image encoder's
# initial weights, noise files for augmentation, a pretrained text model's folder): /metadata and the
# web page leave them out, at any depth of a feature's options (augment.noise_files).
SERVER_PATH_OPTIONS = frozenset({"root", "weights", "noise_files", "pretrained"})
MAX_FORM_FIELDS = 1000  # fields in one form (multipart or urlencoded): each costs memory before validation
INLINE_BODY_BYTES = 16 * 2 ** 10  # a body up to this size without files is parsed on the event loop


class BodyLimit:
    """ASGI middleware: reads the whole body (at most `limit` bytes) before the app sees it, so an
    oversized upload is refused with 413 instead of filling memory or disk."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self._refuse(send)
            if not message.get("more_body"):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: wait for the disconnect, as a server would
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    async def _refuse(self, send) -> None:
        detail = (f"the request body is over the limit of {self.limit:,} bytes (--max-body-mb); send fewer rows "
                  f"per request or smaller images")
        await JSONResponse({"detail": detail}, status_code=413)({"type": "http"}, None, send)


def public(options):
    """Feature options without those that name server files (SERVER_PATH_OPTIONS), at any depth."""
    if isinstance(options, dict):
        return {key: public(value) for key, value in options.items() if key not in SERVER_PATH_OPTIONS}
    if isinstance(options, list):
        return [public(value) for value in options]
    return options


def describe(model, folder: str, settings: Settings, batcher: Batcher) -> dict:
    """GET /metadata: what the model reads and predicts, how good it was, and the server's limits."""
    def feature(item) -> dict:
        options = public(item.config.model_dump(exclude={"name", "type"}))
        return {"name": item.config.name, "type": item.config.type, "options": options, **item.served_metadata()}

    return {"lamina_version": __version__, "model": Path(folder).name,
            "inputs": [feature(item) for item in model.inputs_], "outputs": [feature(item) for item in model.outputs_],
            "metrics": model.metrics_, "training_rows": model.training_.get("rows", {}),
            "explain": True,  # every model explains; one whose outputs cannot be explained answers /explain with 422
            "serving": {**asdict(settings), "predict_calls": batcher.calls}}


def _records(predictions: pd.DataFrame) -> list[dict]:
    return json.loads(predictions.to_json(orient="records", double_precision=15))


def _multipart(body: bytes, content_type: str, limit: int) -> dict:
    """A multipart/form-data body -> {field: text or bytes}, parsed in memory: uploads never touch disk."""
    from python_multipart.multipart import FormParser, parse_options_header

    kind, parameters = parse_options_header(content_type)
    values: dict = {}
    count = [0]

    def counted() -> None:
        count[0] += 1
        if count[0] > MAX_FORM_FIELDS:
            raise ValueError(f"more than {MAX_FORM_FIELDS} fields; send one field per input")

    def on_field(field) -> None:
        counted()
        values[field.field_name.decode("utf-8", "replace")] = (field.value or b"").decode("utf-8", "replace")

    def on_file(file) -> None:
        counted()
        file.file_object.seek(0)
        values[file.field_name.decode("utf-8", "replace")] = file.file_object.read()

    parser = FormParser(kind.decode(), on_field, on_file, boundary=parameters.get(b"boundary"),
                        config={"MAX_MEMORY_FILE_SIZE": limit + 1, "MAX_BODY_SIZE": limit + 1})
    parser.write(body)
    parser.finalize()
    return values


class Rows:
    """Turns a request body into validated rows with their files decoded, or raises RequestProblem."""

    def __init__(self, model, settings: Settings):
        self.model, self.settings = model, settings
        self.names = [feature.config.name for feature in model.inputs_]
        self.fields = schema.request_fields(model)  # how a request sends each input
        self.files = any(field.file for field in self.fields)  # some input is sent as a file (image, sound)
        self.example = schema.example_row(model, self.fields)
        self.row = schema.row_model(model, self.fields)
        self.request = schema.request_model(self.row, self.example)
        self.pool: ThreadPoolExecutor | None = None  # started and stopped with the app (its lifespan)
        self.in_flight = 0  # /predict requests being read or predicted (the event loop's count: no lock)
        self.allowance = Allowance(max(settings.max_decoded_pixels, settings.max_request_pixels),
                                   max(settings.max_decoded_samples, settings.max_request_samples))

    @asynccontextmanager
    async def read(self, request: Request) -> AsyncIterator[list]:
        """The request's validated rows, their files decoded; the share of the allowance that they
        hold is given back when the block ends (answered, refused or the client gone)."""
        body = await request.body()
        content_type = request.headers.get("content-type", "")
        if len(body) <= INLINE_BODY_BYTES and not self.files:
            # a few rows of plain values parse and validate in about 0.1 ms, less than the hop to a
            # thread and back, and hold no share of the allowance (so never wait for one)
            rows, held = self.parse(body, content_type)
        else:
            # parsing and decoding take CPU in proportion to the body: off the event loop, so that
            # /health and the answers of other requests never wait for them
            work = asyncio.get_running_loop().run_in_executor(self.pool, self.parse, body, content_type)
            try:
                rows, held = await asyncio.shield(work)
            except asyncio.CancelledError:  # the client left while its files were decoded: give back their share
                work.add_done_callback(self._give_back)
                raise
        try:
            yield rows
        finally:
            self.allowance.give(held)

    def _give_back(self, work: asyncio.Future) -> None:
        if not work.cancelled() and work.exception() is None:
            self.allowance.give(work.result()[1])

    def parse(self, body: bytes, content_type: str) -> tuple[list, tuple[int, int]]:
        if content_type.startswith("multipart/form-data"):
            try:
                data = {"rows": [_multipart(body, content_type, self.settings.max_body_bytes)]}
            except (ValueError, LookupError) as error:  # python-multipart's errors are ValueErrors
                raise schema.RequestProblem(f"the multipart body cannot be parsed ({error})", 400) from None
        elif content_type.startswith("application/x-www-form-urlencoded"):  # a plain HTML form
            try:
                data = {"rows": [dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True,
                                                max_num_fields=MAX_FORM_FIELDS))]}
            except ValueError:  # the only one parse_qsl raises here: too many fields
                raise schema.RequestProblem(f"the form has more than {MAX_FORM_FIELDS} fields; send one field "
                                            f"per input", 400) from None
        elif content_type.startswith("application/json") or not content_type:
            data = _json(body)
        else:
            raise schema.RequestProblem(f"content type '{content_type}' is not accepted; send application/json, "
                                        f"multipart/form-data or application/x-www-form-urlencoded", 415)
        return self.validate(data)

    def validate(self, data) -> tuple[list, tuple[int, int]]:
        """Validated rows with their files decoded, and the share of the allowance they hold."""
        if isinstance(data, list):  # a bare list of rows is accepted too
            data = {"rows": data}
        if not isinstance(data, dict):
            raise schema.RequestProblem('the body must be a JSON object {"rows": [{...}, ...]}')
        rows = data.get("rows")
        if isinstance(rows, list) and len(rows) > self.settings.max_request_rows:
            raise schema.RequestProblem(f"rows: {len(rows)} rows are over the limit of {self.settings.max_request_rows} "
                                        f"per request (--max-request-rows); split the request", 413)
        settings = self.settings
        budget = Budget(settings.max_image_pixels, settings.max_request_pixels, settings.max_request_samples)
        try:
            parsed = self.request.model_validate(data, context={"budget": budget})
        except ValidationError as error:
            problems = error.errors(include_url=False)
            over = [problem for problem in problems if problem["type"] == OVER_BUDGET]
            raise schema.RequestProblem(schema.explain(over or problems, self.names), 413 if over else 422) from None
        held = self.allowance.take(budget.pixels, budget.samples)  # may wait for others; raises Busy
        try:
            schema.decode(parsed.rows, self.names)  # every file fits the budget: only now is a pixel decoded
        except Exception:  # noqa: BLE001 (whatever fails, the rows are dropped and so is their share)
            self.allowance.give(held)
            raise
        return parsed.rows, held

    def predict(self, rows: list) -> list[dict]:
        """Validated rows -> one dict of predictions per row (run by the batcher's thread). A few rows
        take Model.predict_rows (no DataFrame in or out); a merged batch above FAST_ROWS the DataFrame path."""
        if len(rows) <= min(self.settings.fast_rows, FAST_ROWS):
            return self.model.predict_rows(schema.cells(rows, self.model))
        return _records(self.model.predict(schema.frame(rows, self.model, self.fields)))


def _json(body: bytes):
    """A JSON body -> its value; nesting deeper than schema.MAX_NESTING is refused (json.loads
    recurses once per level: a body of 100,000 '[' would exhaust the interpreter's recursion)."""
    too_deep = schema.RequestProblem(f"the body nests [ and {{ more than {schema.MAX_NESTING} levels deep; a "
                                     f"request is {{\"rows\": [{{...}}]}}, with lists of numbers at most two deep "
                                     f"inside a row", 400)
    try:
        text = body.decode("utf-8") if body else "null"
        data = json.loads(text)
    except RecursionError:
        raise too_deep from None
    except ValueError as error:  # UnicodeDecodeError included
        raise schema.RequestProblem(f"the body is not valid UTF-8 JSON ({error}); send {{\"rows\": [{{...}}]}}",
                                    400) from None
    # fewer brackets in all than the limit cannot nest deeper than it: a small body needs no scan
    if text.count("[") + text.count("{") > schema.MAX_NESTING and schema.nesting(text) > schema.MAX_NESTING:
        raise too_deep
    return data


def _problem(error: schema.RequestProblem) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=error.status)


def _busy(error: Busy) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=503, headers={"Retry-After": "1"})


def _now(batcher: Batcher, rows: list) -> list[dict] | None:
    """batcher.run_now(rows), with a DataError (the data does not fit the model) as the client's problem."""
    try:
        return batcher.run_now(rows)
    except DataError as error:
        raise schema.RequestProblem(str(error)) from None


async def _predicted(future) -> list[dict]:
    try:
        return await asyncio.wrap_future(future)
    except DataError as error:  # the data does not fit the model: the client's to fix
        raise schema.RequestProblem(str(error)) from None


def create_app(model, folder: str, settings: Settings | None = None) -> FastAPI:
    """The FastAPI app serving `model` (a loaded lamina.Model); `folder` names it in /metadata."""
    settings = settings or Settings()
    rows = Rows(model, settings)
    batcher = Batcher(rows.predict, settings.max_batch_rows, settings.batch_wait_ms / 1000, settings.max_waiting,
                      settings.inline_rows)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        rows.pool = ThreadPoolExecutor(max(1, settings.decode_threads), thread_name_prefix="lamina-decode")
        batcher.start()
        # the first prediction pays one-off costs (allocations, lazy imports): pay them before /health says ok
        example, held = rows.validate({"rows": [rows.example]})
        rows.allowance.give(held)  # a few pixels of a plain image, at most
        app.state.warmup = batcher.submit(example)
        yield
        batcher.stop()
        rows.pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title=f"lamina model {Path(folder).name}", version=__version__, lifespan=lifespan,
                  description="Predictions of a lamina model. The request schema lists the model's inputs.")
    app.state.batcher, app.state.settings, app.state.allowance = batcher, settings, rows.allowance
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("error while answering %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; the server log has the details"}, status_code=500)

    _add_routes(app, model, folder, rows)
    _add_explain(app, model, rows)
    app.openapi = lambda: _openapi(app, rows)
    return app


def _add_routes(app: FastAPI, model, folder: str, rows: Rows) -> None:
    """GET /health, /metadata, / and POST /predict."""

    @app.get("/health")
    async def health() -> JSONResponse:
        warmup = app.state.warmup
        if not warmup.done():
            return JSONResponse({"status": "warming up"}, status_code=503)
        if warmup.exception() is not None:
            return JSONResponse({"status": "failed", "detail": f"the warm-up prediction failed: "
                                                               f"{warmup.exception()}"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/metadata")
    async def metadata() -> dict:
        return describe(model, folder, app.state.settings, app.state.batcher)

    @app.get("/", response_class=HTMLResponse)
    async def home() -> HTMLResponse:
        described = describe(model, folder, app.state.settings, app.state.batcher)
        fields = {feature.config.name: field for feature, field in zip(model.inputs_, rows.fields)}
        return HTMLResponse(page.render(described, fields))

    @app.post("/predict", openapi_extra=_body_schema("PredictRequest"))
    async def predict(request: Request) -> JSONResponse:
        batcher = app.state.batcher
        rows.in_flight += 1
        try:
            async with rows.read(request) as validated:
                now = None
                if rows.in_flight == 1 and not rows.files:
                    # requests that arrived with this one start in this turn of the event loop: let them
                    # count themselves in before deciding that this one is alone
                    await asyncio.sleep(0)
                    # alone, a few plain rows, a fast model, the worker idle: predicted right here (no
                    # hand-over to the worker thread and back); else queued, to be batched with the others
                    now = _now(batcher, validated) if rows.in_flight == 1 else None
                predictions = now if now is not None else await _predicted(batcher.submit(validated))
        except schema.RequestProblem as error:
            return _problem(error)
        except Busy as error:
            return _busy(error)
        finally:
            rows.in_flight -= 1
        return JSONResponse({"predictions": predictions})


def _add_explain(app: FastAPI, model, rows: Rows) -> None:
    # not micro-batched: explanations are few and slow (many forward passes per row)
    @app.post("/explain", openapi_extra=_body_schema("PredictRequest"))
    async def explain(request: Request) -> JSONResponse:
        try:
            async with rows.read(request) as validated:
                explanation = await asyncio.to_thread(model.explain, schema.frame(validated, model, rows.fields))
        except schema.RequestProblem as error:
            return _problem(error)
        except Busy as error:
            return _busy(error)
        except (DataError, ConfigError) as error:  # e.g. a generated-text output, which attributions cannot explain
            return _problem(schema.RequestProblem(str(error)))
        except ImportError as error:
            return JSONResponse({"detail": f"explanations need captum on the server: pip install 'lamina[explain]' "
                                           f"({error})"}, status_code=501)
        if isinstance(explanation, pd.DataFrame):
            explanation = _records(explanation)
        return JSONResponse({"explanations": json.loads(json.dumps(explanation, default=str))})


def _body_schema(name: str) -> dict:
    reference = {"$ref": f"#/components/schemas/{name}"}
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": reference},
        "multipart/form-data": {"schema": {"type": "object", "description": "one row: a form field per input, "
                                                                            "image inputs as file uploads"}}}}}


def _openapi(app: FastAPI, rows: Rows) -> dict:
    """FastAPI's document plus the request schema derived from the model's inputs (the routes
    read the body themselves, to take JSON and multipart alike)."""
    if app.openapi_schema is None:
        document = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        request_schema = rows.request.model_json_schema(ref_template="#/components/schemas/{model}")
        components = document.setdefault("components", {}).setdefault("schemas", {})
        components.update(request_schema.pop("$defs", {}))
        components["PredictRequest"] = request_schema
        app.openapi_schema = document
    return app.openapi_schema
