"""The model server's HTTP app (`make serve`): strict about what it accepts, never an error page.

Routes: `POST /invocations` scores collisions; `GET /ping` and `GET /health` answer 200 once the
model is loaded; `GET /version` names the model version served now, and the alias it follows (null when
pinned). A server started on an alias follows it (`lib.modeling.alias_follower`): each request scores
with the model it started with, whatever a promotion swaps in meanwhile.

A request to /invocations is answered, in this order:
* 415 unless its Content-Type is application/json;
* 413 when its body is larger than `MAX_BODY_BYTES` (10 MiB, about 30,000 collisions), announced or not;
* 400 for a body that is not JSON, is nested deeper than JSON of rows can be, or holds no rows
  (`{"dataframe_records": [{...}, ...]}` or `{"dataframe_split": {"columns": [...], "data": [[...]]}}`);
* 400 naming the column, the row and the value when a feature the model needs is absent, is not a
  number (text, true/false, an object), is not finite, or lies outside what the feature can hold
  (`lib.data.feature_values`: DfT codes, whole counts, coordinates around Great Britain);
* 200 with `{"predictions": [{"p_fatal": ..., ...}, ...]}` in request order.
Error bodies are `{"error_code": ..., "message": ...}` and quote at most a short value, never the body.
Fields the model does not use are ignored.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from contextlib import asynccontextmanager
from functools import partial

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from lib.data.feature_values import DOMAINS
from lib.modeling.alias_follower import AliasFollower, ServedModel

MAX_BODY_BYTES = 10 * 1024 * 1024
# Requests of up to this many collisions are scored on the event loop: the hop to a worker thread costs
# about 3 ms, more than scoring one collision, and the loop is held only as long. Larger ones go to a
# thread, so that /ping and /version keep answering meanwhile.
INLINE_ROWS = 100
# The environment variables through which scripts/serve.py tells the server's workers what to load (a
# pinned version) and, when it was asked for an alias, which alias to follow from there.
MODEL_URI_VARIABLE = "ASF_SERVED_MODEL_URI"
FOLLOWED_ALIAS_VARIABLE = "ASF_FOLLOWED_ALIAS"


class RequestRefused(Exception):
    """The request cannot be scored; `status` is the HTTP status and the message says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def parse_rows(body: bytes) -> tuple[list[str], list[list]]:
    """(columns, rows) of a JSON body in MLflow's `dataframe_records` or `dataframe_split` form."""
    try:
        document = json.loads(body)
    except RecursionError:
        raise RequestRefused(400, "the body nests JSON deeper than rows of collisions can be") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise RequestRefused(400, f"the body is not valid JSON ({error})") from None
    if isinstance(document, dict) and isinstance(document.get("dataframe_records"), list):
        records = document["dataframe_records"]
        if not all(isinstance(record, dict) for record in records):
            raise RequestRefused(400, "dataframe_records must be a list of objects, one per collision")
        columns = list(dict.fromkeys(key for record in records for key in record))
        return columns, [[record.get(column) for column in columns] for record in records]
    split = document.get("dataframe_split") if isinstance(document, dict) else None
    if isinstance(split, dict) and isinstance(split.get("columns"), list) and isinstance(split.get("data"), list):
        columns, rows = split["columns"], split["data"]
        if not all(isinstance(column, str) for column in columns):
            raise RequestRefused(400, "dataframe_split.columns must be a list of names")
        for number, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != len(columns):
                raise RequestRefused(400, f"dataframe_split.data row {number} is not a list of {len(columns)} values")
        return columns, rows
    raise RequestRefused(
        400, 'the body must be {"dataframe_records": [{...}, ...]} or {"dataframe_split": {"columns": [...], '
             '"data": [[...], ...]}}'
    )


def feature_matrix(columns: list[str], rows: list[list], features: tuple[str, ...]) -> np.ndarray:
    """The model's input, a row per collision and a float64 column per feature (NaN: missing), each value
    checked against its feature's domain. These checks are stricter than the model signature's, so the
    model is called directly, without MLflow checking the same values again in a DataFrame."""
    missing = [feature for feature in features if feature not in columns]
    if missing:
        raise RequestRefused(400, f"the rows lack features the model needs: missing inputs {missing}")
    position = {column: index for index, column in enumerate(columns)}
    matrix = np.empty((len(rows), len(features)))
    for at, feature in enumerate(features):
        values = [row[position[feature]] for row in rows]
        for number, value in enumerate(values):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise RequestRefused(400, f"{feature} is {_short(value)} in row {number}: features are numbers "
                                          "(DfT codes as numbers), or null when missing")
        numbers = np.array([np.nan if value is None else value for value in values], dtype=np.float64)
        infinite = np.isinf(numbers)
        if infinite.any():
            number = int(np.argmax(infinite))
            raise RequestRefused(400, f"{feature} holds {numbers[number]} in row {number}; features are finite "
                                      "numbers, or null when missing")
        domain = DOMAINS.get(feature)
        if domain is not None:
            outside = ~domain.allows(numbers)
            if outside.any():
                number = int(np.argmax(outside))
                raise RequestRefused(400, f"{feature} is {_short(values[number])} in row {number}; it must be "
                                          f"{domain.describe()}")
        matrix[:, at] = numbers
    return matrix


def build_app(served: ServedModel, follower: AliasFollower | None = None) -> Starlette:
    """The app serving `served.current`; with a `follower`, it follows an alias while the app runs."""

    async def invocations(request: Request) -> Response:
        current = served.current  # this request's model to the end, whatever a promotion swaps in meanwhile
        try:
            media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if media_type != "application/json":
                raise RequestRefused(415, f"send JSON with Content-Type: application/json (got "
                                          f"{_short(media_type or 'none')})")
            announced = request.headers.get("content-length", "")
            if announced.isdigit() and int(announced) > MAX_BODY_BYTES:
                raise RequestRefused(413, f"the body is larger than {MAX_BODY_BYTES:,} bytes; send fewer rows per "
                                          "request")
            body = bytearray()
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    raise RequestRefused(413, f"the body is larger than {MAX_BODY_BYTES:,} bytes; send fewer rows "
                                              "per request")
            X = feature_matrix(*parse_rows(bytes(body)), current.features)
            if not len(X):
                return JSONResponse({"predictions": []})
            score = partial(current.scorer.predict_matrix, X)
            predictions = score() if len(X) <= INLINE_ROWS else await asyncio.to_thread(score)
        except RequestRefused as refused:
            return JSONResponse({"error_code": "BAD_REQUEST", "message": str(refused)}, status_code=refused.status)
        records = predictions.to_json(orient="records", double_precision=15)
        return Response('{"predictions": ' + records + "}", media_type="application/json")

    async def ping(request: Request) -> Response:
        return Response("\n", media_type="application/json")

    async def served_version(request: Request) -> Response:
        return JSONResponse({"model_version": served.current.version,
                             "follows": follower.alias_uri if follower else None})

    @asynccontextmanager
    async def lifespan(app: Starlette):
        following = asyncio.create_task(follower.follow()) if follower else None
        yield
        if following:
            following.cancel()

    return Starlette(routes=[
        Route("/invocations", invocations, methods=["POST"]),
        Route("/ping", ping), Route("/health", ping), Route("/version", served_version),
    ], lifespan=lifespan)


def app_from_environment() -> Starlette:
    """For each uvicorn worker: load the pinned model version that scripts/serve.py names and, when it
    was asked for an alias, follow that alias from there (checking every MODEL_CHECK_SECONDS)."""
    from lib.config import configure
    from lib.modeling.mlflow_model import load_pyfunc

    settings = configure()
    uri = os.environ[MODEL_URI_VARIABLE]
    name, version = uri.removeprefix("models:/").rsplit("/", 1)
    served = ServedModel(load_pyfunc(uri), version)
    alias = os.environ.get(FOLLOWED_ALIAS_VARIABLE)
    follower = AliasFollower(served, name, alias, settings.model_check_seconds, settings.mlflow_tracking_uri,
                             logging.getLogger("uvicorn.error")) if alias else None  # uvicorn's own log
    return build_app(served, follower)
