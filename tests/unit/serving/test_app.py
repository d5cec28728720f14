"""The scoring server's guard on a toy ASGI app that answers the way MLflow's does (the real one: integration)."""

import asyncio
import base64
import json
import os

from her2pcr.serving.app import MAX_MESSAGE_CHARS, RequestGuard, safe_message

SECRET = base64.b64encode(os.urandom(3000)).decode()  # stands for a base64 exam zip (names, MRNs inside)


async def echoing_app(scope, receive, send):
    """Refuses every request with MLflow's wrapping: the request itself inside the message, and a stack trace."""
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    payload = {"error_code": "INVALID_PARAMETER_VALUE", "stack_trace": "Traceback ...",
               "message": f"Failed to predict data '{body.decode()}'. \nError: row 0: dicom_zip is not a zip archive"}
    data = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": 400, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": data})


def call(app, body: bytes, chunk: int | None = None, declared: bool = True):
    """(status, JSON answer, bytes the app had received when it answered) of one POST /invocations."""
    parts = [body[i:i + chunk] for i in range(0, len(body), chunk)] if chunk else [body]
    headers = [(b"content-type", b"application/json")]
    headers += [(b"content-length", str(len(body)).encode())] if declared else []
    sent, received = [], []

    async def receive():
        part = parts.pop(0) if parts else b""
        received.append(len(part))
        return {"type": "http.request", "body": part, "more_body": bool(parts)}

    async def send(message):
        sent.append((message, sum(received)))

    asyncio.run(app({"type": "http", "path": "/invocations", "headers": headers}, receive, send))
    status, before = next((m["status"], n) for m, n in sent if m["type"] == "http.response.start")
    answer = json.loads(b"".join(m.get("body", b"") for m, _ in sent if m["type"] == "http.response.body"))
    return status, answer, before


def test_an_error_never_echoes_the_request_nor_a_stack_trace():
    body = json.dumps({"dataframe_records": [{"dicom_zip": SECRET, "row_start": 1}]}).encode()
    status, answer, _ = call(RequestGuard(echoing_app, 10**7), body)
    assert status == 400 and set(answer) == {"error_code", "message"}
    assert answer["message"] == "row 0: dicom_zip is not a zip archive"
    assert SECRET[:40] not in json.dumps(answer)


def test_a_body_over_the_limit_is_refused_before_it_is_read():
    status, answer, before = call(RequestGuard(echoing_app, 1000), b"x" * 50_000, chunk=1000)
    assert status == 413 and "over the limit of" in answer["message"] and before == 0


def test_a_chunked_body_is_cut_off_once_it_passes_the_limit():
    status, _, before = call(RequestGuard(echoing_app, 1000), b"x" * 50_000, chunk=400, declared=False)
    assert status == 413 and before <= 1200


def test_schema_and_json_wrappers_and_long_messages_are_trimmed():
    repr_ = f"  dicom_zip\n0  {SECRET[:20]}...  1"
    schema = {"message": f"Failed to predict data '{repr_}'. \nError: Failed to enforce schema of data '{repr_}' with "
                         "schema '['dicom_zip': string (optional)]'. Error: Incompatible input types for column "
                         "row_start. Can not safely convert bool to int64."}
    code, text = safe_message(json.dumps(schema).encode(), SECRET.encode())
    assert text == "Incompatible input types for column row_start. Can not safely convert bool to int64."
    malformed = {"message": "Ensure that input is a valid JSON formatted string. Error: 'JSONDecodeError(...)'"
                            f"\nInput: \n{{\"dicom_zip\": \"{SECRET}"}
    assert SECRET[:20] not in safe_message(json.dumps(malformed).encode(), SECRET.encode())[1]
    long = {"message": "x " * 5000}
    assert len(safe_message(json.dumps(long).encode(), b"")[1]) <= MAX_MESSAGE_CHARS


def test_fractional_and_boolean_box_values_are_refused_before_mlflow_casts_them():
    from her2pcr.serving.app import box_problem

    json_type = b"application/json"
    records = {"dataframe_records": [{"dicom_zip": "x", "row_start": 3, "row_end": 9.0}, {"row_start": 3.5}]}
    assert box_problem(json.dumps(records).encode(), json_type) == \
        "row 1: box column row_start must be an integer, got 3.5"
    split = {"dataframe_split": {"columns": ["dicom_zip", "slice_end"], "data": [["x", True]]}}
    assert box_problem(json.dumps(split).encode(), json_type) == \
        "row 0: box column slice_end must be an integer, got true"
    assert box_problem(b'{"dataframe_records": [{"row_start": 4}]}', json_type) is None
    assert box_problem(b"not json", json_type) is None and box_problem(b"row_start\n3.5", b"text/csv") is None
    status, answer, _ = call(RequestGuard(echoing_app, 10**6), json.dumps(records).encode())
    assert status == 400 and answer["message"].startswith("row 1: box column row_start")
