"""The documented scoring server: MLflow's own (``mlflow.pyfunc.scoring_server``), behind a guard.

MLflow's server reads any body size and, when the model refuses a request, answers with
``Failed to predict data '<the whole request>'`` plus a stack trace: a refused exam request would
send its base64 zip (names, MRNs) back, and 50 MB of random bytes a response seven times larger.
The guard, a plain ASGI middleware around MLflow's app:

- refuses a body over the limit with 413 before reading it (by its Content-Length) or as soon as
  the bytes read pass the limit (a chunked body); the rest is discarded as it arrives, never kept;
- refuses fractional or boolean box values (MLflow would cast 3.5 to 3 and ``true`` to 1);
- rewrites every error answer of ``/invocations`` to ``{"error_code", "message"}``: the model's
  own message (which names the field and the reason, never a value), no stack trace, any run of
  the request's own bytes removed, at most ``MAX_MESSAGE_CHARS`` characters.

Everything else (``/ping``, ``/version``, answers, MLflow's timeout) is MLflow's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable

from her2pcr.serving.model import BOX_FIELDS

MAX_MESSAGE_CHARS = 400
MB = 1024 * 1024
DRAIN_LIMIT = 4  # a refused body is discarded as it arrives, up to this many times the limit
#: How MLflow wraps a message around the request: "Failed to predict data '<repr>'. \nError: <message>", "Failed to
#: enforce schema of data '<repr>' with schema '<schema>'. Error: <message>", "<message>\nInput: \n<the body>".
_WRAPPERS = (re.compile(r"^Failed to predict data .*?\nError: ", re.DOTALL),
             re.compile(r"Failed to enforce schema of data .*? with schema .*?\. Error: ", re.DOTALL),
             re.compile(r"\nInput: .*$", re.DOTALL))
_ECHO_MIN_CHARS = 12  # shorter runs are words a message may share with any request ("dicom_zip")
_TOKEN = re.compile(r"[^\s'\",.:{}\[\]()]{" + str(_ECHO_MIN_CHARS) + ",}")  # base64 and DICOM values hold none

Scope = dict
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


def safe_message(raw: bytes, request: bytes) -> tuple[str, str]:
    """(error code, message) of an MLflow error body, with no part of the request in it."""
    try:
        payload = json.loads(raw)
    except ValueError:
        payload = {"message": raw.decode("utf-8", "replace")}
    if not isinstance(payload, dict):
        payload = {"message": str(payload)}
    message = str(payload.get("message", ""))
    for wrapper in _WRAPPERS:
        message = wrapper.sub("", message)
    text = request.decode("utf-8", "replace")
    tokens = sorted(set(_TOKEN.findall(message)), key=len, reverse=True)
    for token in tokens:  # a long token of the message that the request holds is the request's, not ours
        if token in text:
            message = message.replace(token, "<request data>")
    message = re.sub(r"(<request data>[\s'\",.]*){2,}", "<request data> ", message).strip()
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS - 3] + "..."
    return str(payload.get("error_code", "BAD_REQUEST")), message or "the request was refused"


def box_problem(request: bytes, content_type: bytes) -> str | None:
    """Why a JSON request's box values cannot be used, or None. MLflow casts the signature's integer columns with
    ``astype``, so 3.5 would arrive as 3 and ``true`` as 1: a fractional or boolean box value is refused here,
    before that cast, naming the row and the column."""
    if not content_type.startswith(b"application/json"):
        return None
    try:
        payload = json.loads(request)
    except ValueError:
        return None  # MLflow answers a body that is not JSON (and the guard trims that answer)
    if not isinstance(payload, dict):
        return None
    rows: list = []
    if isinstance(payload.get("dataframe_records"), list):
        rows = [r for r in payload["dataframe_records"] if isinstance(r, dict)]
    elif isinstance(split := payload.get("dataframe_split"), dict) and isinstance(split.get("columns"), list):
        rows = [dict(zip(split["columns"], r, strict=False)) for r in split.get("data") or [] if isinstance(r, list)]
    for position, row in enumerate(rows):
        for field in BOX_FIELDS:
            value = row.get(field)
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                return f"row {position}: box column {field} must be an integer, got {json.dumps(value)}"
    return None


class RequestGuard:
    """ASGI middleware: body limit and non-echoing errors on ``/invocations``."""

    def __init__(self, app, max_body_bytes: int) -> None:
        self.app, self.max_body_bytes = app, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != "/invocations":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"").decode() or "0"
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(send, int(declared))
            await _discard(receive, DRAIN_LIMIT * self.max_body_bytes)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                await self._too_large(send, len(body), at_least=True)
                await _discard(receive, DRAIN_LIMIT * self.max_body_bytes)
                return
            if not message.get("more_body", False):
                break
        request = bytes(body)
        if (problem := box_problem(request, headers.get(b"content-type", b""))) is not None:
            await _send_json(send, 400, {"error_code": "INVALID_PARAMETER_VALUE", "message": problem})
            return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": request, "more_body": False}
            return await receive()

        start: dict = {}
        chunks: list[bytes] = []

        async def guarded_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                if start["status"] < 400:
                    await send(message)
                return
            if start.get("status", 200) < 400:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                code, text = safe_message(b"".join(chunks), request)
                await _send_json(send, start["status"], {"error_code": code, "message": text})

        await self.app(scope, replay, guarded_send)

    async def _too_large(self, send: Send, size: int, at_least: bool = False) -> None:
        text = (f"request body is {'over ' if at_least else ''}{size / MB:.1f} MB, over the limit of "
                f"{self.max_body_bytes / MB:.1f} MB")
        await _send_json(send, 413, {"error_code": "REQUEST_TOO_LARGE", "message": text})


async def _discard(receive: Receive, limit: int) -> None:
    """Let the rest of a refused body arrive without keeping it, so that a client that sends the whole body before
    it reads (most do) gets the 413 rather than a reset connection; past ``limit`` bytes the server stops waiting."""
    seen = 0
    while seen <= limit:
        message = await receive()
        seen += len(message.get("body", b""))
        if message["type"] == "http.disconnect" or not message.get("more_body", False):
            return


async def _send_json(send: Send, status: int, payload: dict) -> None:
    data = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def max_body_bytes(model_config: dict) -> int:
    """The body limit of a version: one base64 field of ``max_payload_mb`` (4/3 of it in base64) and 1 MB of JSON."""
    return int(model_config["limits"]["max_payload_mb"] * MB * 4 / 3) + MB


def guarded_app(model_uri: str):
    """MLflow's scoring app for the version at ``model_uri``, behind the guard."""
    from mlflow.pyfunc import scoring_server

    model = scoring_server.load_model_with_mlflow_config(model_uri)
    config = model.model_config or {}
    return RequestGuard(scoring_server.init(model), max_body_bytes(config))


def serve(model_uri: str, host: str, port: int) -> None:
    """Serve the version on host:port (uvicorn, one process; predictions run in threads, as MLflow's)."""
    import uvicorn

    uvicorn.run(guarded_app(model_uri), host=host, port=port, log_level="info")
