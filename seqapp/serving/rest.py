"""TF Serving's REST API on uvicorn (httptools' C parser, the uvloop serving event loop).

    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]            model status
    GET  <monitoring path>                                         Prometheus metrics (text)
    GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata   model metadata
    POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict|:classify|:regress

Errors are `{"error": "..."}` with the HTTP status of the TF status code
(`errors.HTTP_STATUS`). The one exception is the request body limit: an
oversize body gets 413 Payload Too Large (code RESOURCE_EXHAUSTED inside, as
gRPC reports an oversize message), not the 429 the mapping would give, because
429 means "too many requests, retry later" to clients and proxies that retry
it, and an oversize body never succeeds on retry.

`RestApi.respond(method, path, body)` is the whole API as one coroutine
(`RestApi.handle` the same for a caller on another thread); the ASGI app only
reads the request (with limits and timeouts) and writes the answer. A
:predict is parsed, checked and answered on the event loop and awaits its
batch there; status, metadata, :classify and :regress (and :predict with
batching off) run in the API's thread pool. `respond` reports every
:predict/:classify/:regress to the server's `metrics.ServerMetrics.record_request`
(the gRPC service reports to the same).
"""

import asyncio
import concurrent.futures
import json
import logging
import re
import socket
import time

import grpc
import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from seqapp.serving import event_loop
from seqapp.serving import inference
from seqapp.serving import metrics
from seqapp.serving import tensors
from seqapp.serving.errors import ServingError
from seqapp.serving.errors import invalid_argument

log = logging.getLogger("seqapp.serving")

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
# Seconds a connection may sit idle, or take to send a request's headers or its body.
READ_TIMEOUT_S = 60
# Connections the kernel queues before they are accepted (the listen backlog).
BACKLOG = 128
SERVER_HEADER = "seqapp-serving"

_VERB_API = {"predict": "Predict", "classify": "Classify", "regress": "Regress"}
_PATH = re.compile(
    r"/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?::(?P<verb>[^/:]*)|/(?P<metadata>metadata))?")
# orjson turns integers outside 64 bits into floats where json keeps them exact; a body with a
# run of 19 digits may hold one, so it goes to json.
_LONG_NUMBER = re.compile(rb"[0-9]{19}")


def _malformed(method, path):
    return invalid_argument(f"Malformed request: {method} {path}")


def parse_json_body(body):
    """The request body as a JSON object (TF Serving accepts UTF-8 JSON objects only).

    orjson parses what it parses exactly as the json module does (what it refuses, or what may hold
    an integer outside 64 bits, goes to the json module), so values and error texts are json's.

    Args:
        body: the request body (bytes).

    Returns:
        The parsed object (a dict).

    Raises:
        ServingError: INVALID_ARGUMENT, "JSON Parse error: ...".
    """
    value = None
    if not _LONG_NUMBER.search(body):
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # json says why, in its words
    if value is None:
        value = _parse_with_json(body)
    if not isinstance(value, dict):
        raise invalid_argument("JSON Parse error: the request must be a JSON object")
    return value


def _parse_with_json(body):
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise invalid_argument(f"JSON Parse error: Invalid encoding in string (not UTF-8 at byte "
                               f"{error.start})") from None
    if not text.strip():
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        return json.loads(text)
    except RecursionError:
        raise invalid_argument("JSON Parse error: the document is nested too deeply") from None
    except ValueError as error:
        raise invalid_argument(f"JSON Parse error: {error}") from None


def _signature_name(body):
    name = body.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument("'signature_name' key must be a string value.")
    return name


class RestApi:
    """The REST API over a `ModelManager`.

    Args:
        manager: the `ModelManager`.
        timeout_ms: per-request deadline (DEADLINE_EXCEEDED → 504); <= 0 for none.
        workers: threads running the calls that do not run on the event loop.
        check_method_name: TF Serving's `--enable_signature_method_name_check`.
        metrics: the server's `metrics.ServerMetrics` (requests are counted there), or None.
        metrics_path: where GET serves the metrics text; None for nowhere.
    """

    def __init__(self, manager, timeout_ms=30000, workers=8, check_method_name=False, metrics=None,
                 metrics_path=None):
        self.manager = manager
        self.check_method_name = check_method_name
        self.metrics = metrics
        self.metrics_path = metrics_path if metrics is not None else None
        self.timeout = timeout_ms / 1000 if timeout_ms and timeout_ms > 0 else None
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="seqapp-rest")

    def close(self):
        self._pool.shutdown(wait=False, cancel_futures=True)

    def handle(self, method, path, body=b""):
        """`respond` for a caller on any thread but the serving loop's: `(http_status, json_object)`."""
        return event_loop.call(self.respond(method, path, body))

    async def respond(self, method, path, body=b""):
        """`(http_status, json_object)` for one request, on the serving loop; never raises.

        Args:
            method: the HTTP method.
            path: the request target (a query string is ignored).
            body: the request body (bytes).
        """
        start = time.perf_counter()
        status, payload, code = await self._answer(method, path, body)
        if self.metrics is not None and method == "POST":
            match = _PATH.fullmatch(path.split("?", 1)[0])
            if match is not None and match["verb"] in _VERB_API:
                self.metrics.record_request(match["name"], _VERB_API[match["verb"]], "REST", code,
                                            time.perf_counter() - start)
        return status, payload

    async def _answer(self, method, path, body):
        """`(http_status, json_object, grpc.StatusCode)`."""
        try:
            if self.timeout is None:
                payload = await self._dispatch(method, path, body)
            else:
                try:
                    async with asyncio.timeout(self.timeout):
                        payload = await self._dispatch(method, path, body)
                except TimeoutError:
                    raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                       f"Deadline exceeded: the request took more than {self.timeout * 1000:.0f} ms") \
                        from None
            return 200, payload, grpc.StatusCode.OK
        except ServingError as error:
            return error.http_status, {"error": error.message}, error.code
        except Exception as error:  # noqa: BLE001 - a bug must not take the server down
            log.exception("Unexpected error on %s %s", method, path)
            return 500, {"error": f"Internal error: {type(error).__name__}: {error}"}, grpc.StatusCode.INTERNAL

    async def _in_pool(self, fn, *args):
        """`fn(*args)` in the API's thread pool: calls that block (locks, files, model calls)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def _dispatch(self, method, path, body):
        path = path.split("?", 1)[0]
        if path.rstrip("/") == "/v1/models":
            raise invalid_argument("Missing model name in request.")
        match = _PATH.fullmatch(path)
        if match is None or method not in ("GET", "POST"):
            raise _malformed(method, path)
        name, version, label = match["name"], match["version"], match["label"]
        verb, metadata = match["verb"], match["metadata"]
        if version is not None:
            if not re.fullmatch(r"[0-9]+", version):
                raise _malformed(method, path)
            if int(version) >= 2 ** 63:
                raise invalid_argument(f"Failed to convert version: {version} to numeric.")
            version = int(version)
        if method == "GET":
            if verb is not None:
                raise _malformed(method, path)
            if metadata:
                return await self._in_pool(self._metadata, name, version, label)
            return await self._in_pool(self._status, name, version, label)
        if metadata or verb not in ("predict", "classify", "regress"):
            raise _malformed(method, path)
        request = parse_json_body(body)
        if verb == "predict":
            return await self._predict(name, version, label, request)
        return await self._in_pool(self._classify_or_regress, verb, name, version, label, request)

    def _metadata(self, name, version, label):
        return inference.metadata_json(self.manager.servable(name, version, label))

    def _status(self, name, version, label):
        from google.protobuf import json_format

        response = self.manager.status(name, version, label)
        return json_format.MessageToDict(response, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)

    async def _predict(self, name, version, label, request):
        signature_name = _signature_name(request)
        if "instances" in request and "inputs" in request:
            raise invalid_argument("Not formatted correctly expecting only one of 'inputs' or 'instances' keys exist")
        if "instances" not in request and "inputs" not in request:
            raise invalid_argument("Missing 'inputs' or 'instances' key")
        servable = self.manager.servable(name, version, label)
        signature_name, signature = servable.signature(signature_name)
        if "instances" in request:
            arrays = tensors.instances_to_arrays(request["instances"], signature.inputs)
            outputs = await servable.run_async(signature_name, arrays, executor=self._pool)
            return {"predictions": tensors.outputs_to_rows(outputs)}
        arrays = tensors.columns_to_arrays(request["inputs"], signature.inputs)
        return {"outputs": tensors.outputs_to_columns(await servable.run_async(signature_name, arrays,
                                                                               executor=self._pool))}

    def _classify_or_regress(self, verb, name, version, label, request):
        signature_name = _signature_name(request)
        examples = request.get("examples")
        if not isinstance(examples, list):
            raise invalid_argument("Expecting 'examples' to be a list/array of JSON objects")
        if not examples:
            raise invalid_argument("Input is empty.")
        context = request.get("context")
        serialized = [tensors.json_to_example(e, f"examples[{i}]").SerializeToString() for i, e in enumerate(examples)]
        if context is not None:
            prefix = tensors.json_to_example(context, "context").SerializeToString()
            serialized = [prefix + item for item in serialized]
        servable = self.manager.servable(name, version, label)
        if verb == "classify":
            _, rows = inference.classify_examples(servable, signature_name, serialized, self.check_method_name)
            return {"results": [[[_text(label), tensors.float32_to_json(score)] for label, score in row]
                                for row in rows]}
        _, values = inference.regress_examples(servable, signature_name, serialized, self.check_method_name)
        return {"results": [tensors.float32_to_json(v) for v in values]}


def _text(label):
    return label.decode("utf-8", errors="replace") if isinstance(label, bytes) else str(label)


class _App:
    """The ASGI application: reads a request's body within the limits and answers through `RestApi.respond`.

    Args:
        api: the `RestApi`.
        max_request_bytes: the body limit (413 above it).
    """

    def __init__(self, api, max_request_bytes):
        self.api = api
        self.max_request_bytes = int(max_request_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":  # lifespan is off; nothing else reaches an HTTP/1.1 server
            return
        method = scope["method"]
        # The request target as sent (not percent-decoded), as the API has always matched it.
        path = scope["raw_path"].decode("latin-1")
        try:
            body = await self._read_body(scope, receive)
        except ServingError as error:
            await _send_json(send, error.http_status, {"error": error.message}, close=True)
            return
        if body is None:  # the client went away
            return
        api = self.api
        if api.metrics_path is not None and path == api.metrics_path:
            if method == "GET":
                await _send(send, 200, api.metrics.exposition(), metrics.CONTENT_TYPE)
            else:
                await _send_json(send, 405, {"error": f"Malformed request: {method} {api.metrics_path}"})
            return
        status, payload = await api.respond(method, path, body)
        await _send_json(send, status, payload)

    def _too_large(self, length):
        return ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"Request body of {length} bytes exceeds the limit of {self.max_request_bytes} bytes "
                            "(--max_request_bytes)", http_status=413)

    async def _read_body(self, scope, receive):
        """The body (chunked or not, httptools has framed it), None if the client left, or a ServingError."""
        limit = self.max_request_bytes
        length, expect = None, False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = int(value)  # httptools refuses a malformed Content-Length with 400
            elif name == b"expect":
                expect = value.lower() == b"100-continue"
        if length is not None and length > limit:
            # Refused before it is read: with Expect: 100-continue the client never sends it. A moderately
            # oversize body is read and dropped first, so a client that sends it whole can read our answer;
            # a huge one is not read at all (the connection closes).
            if not expect and length <= 4 * limit + (1 << 20):
                await self._drain(receive)
            raise self._too_large(length)
        parts, total = [], 0
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    chunk = message.get("body", b"")
                    total += len(chunk)
                    if total > limit:
                        raise self._too_large(total)
                    parts.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(parts)
        except TimeoutError:
            raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED,
                               f"Request body not received within {READ_TIMEOUT_S} s", http_status=408) from None

    async def _drain(self, receive):
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                while (await receive()).get("more_body", False):
                    pass
        except TimeoutError:
            pass  # answered anyway; the connection closes


async def _send_json(send, status, payload, close=False):
    # json, not orjson, writes answers: TF Serving's float texts (NaN, Infinity, the shortest
    # float32 repr) and json's ", " / ": " separators are what clients have always got.
    await _send(send, status, json.dumps(payload, allow_nan=True).encode("utf-8"), "application/json", close)


async def _send(send, status, data, content_type, close=False):
    headers = [(b"content-type", content_type.encode("latin-1")), (b"content-length", str(len(data)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


class _CorkedTransport:
    """A transport that sends the writes of one event-loop step as one.

    uvicorn writes a response's head and body separately; sent as they come, each answer costs two
    send calls and two TCP segments. Writes are joined and sent once the step ends; `close` sends
    what is pending first. Everything else goes to the real transport.

    Args:
        transport: the connection's `asyncio.Transport`.
        loop: the event loop it belongs to.
    """

    def __init__(self, transport, loop):
        self._transport = transport
        self._loop = loop
        self._pending = []

    def write(self, data):
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self):
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending = []
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self):
        self._flush()
        self._transport.close()

    def __getattr__(self, name):
        return getattr(self._transport, name)


class _Protocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with JSON for malformed requests, a read timeout for headers, and
    each answer sent in one write (`_CorkedTransport`).

    uvicorn answers a request it cannot parse in plain text, and waits forever for headers that
    trickle in; TF Serving's clients expect `{"error": ...}` and a server must not be held open.
    """

    _header_timer = None

    def connection_made(self, transport):
        super().connection_made(_CorkedTransport(transport, self.loop))
        self._arm_header_timer()  # a connection that never sends a request

    def connection_lost(self, exc):
        self._disarm_header_timer()
        super().connection_lost(exc)

    def on_message_begin(self):
        super().on_message_begin()
        self._arm_header_timer()

    def on_headers_complete(self):
        self._disarm_header_timer()
        super().on_headers_complete()

    def _arm_header_timer(self):
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(READ_TIMEOUT_S, self._read_timed_out)

    def _disarm_header_timer(self):
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _read_timed_out(self):
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def send_400_response(self, msg):
        data = json.dumps({"error": f"Malformed request: {msg}"}).encode("utf-8")
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\nserver: " + SERVER_HEADER.encode() +
                             b"\r\ncontent-type: application/json\r\ncontent-length: " + str(len(data)).encode() +
                             b"\r\nconnection: close\r\n\r\n" + data)
        self.transport.close()


class RestServer:
    """The HTTP server: uvicorn on the serving event loop, bound to `host` (127.0.0.1 unless told).

    Args:
        api: the `RestApi`.
        host: the address to bind.
        port: the TCP port (0: any free one; see `port`).
        max_request_bytes: the request body limit (413 above it).

    Raises:
        OSError: the address cannot be bound.
    """

    def __init__(self, api, host="127.0.0.1", port=8501, max_request_bytes=DEFAULT_MAX_REQUEST_BYTES):
        self.api = api
        # Bound here, not by uvicorn, which logs a bind error and exits the process.
        self._socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind((host, port))
        except OSError:
            self._socket.close()
            raise
        config = uvicorn.Config(_App(api, max_request_bytes), http=_Protocol, lifespan="off", access_log=False,
                                log_config=None, server_header=False, headers=[("server", SERVER_HEADER)],
                                backlog=BACKLOG, timeout_keep_alive=READ_TIMEOUT_S, timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._serving = None

    @property
    def port(self):
        return self._socket.getsockname()[1]

    def start(self):
        """Starts serving on the serving loop; returns once the socket listens."""
        self._serving = asyncio.run_coroutine_threadsafe(self._server.serve(sockets=[self._socket]),
                                                         event_loop.get())
        while not self._server.started:
            if self._serving.done():
                self._serving.result()  # raises what stopped it
                raise RuntimeError("the REST server stopped while starting")
            time.sleep(0.005)

    def stop(self):
        """Stops accepting, lets requests in flight finish (2 s at most), closes the socket."""
        if self._serving is not None:
            self._server.should_exit = True
            try:
                self._serving.result(10)
            except concurrent.futures.TimeoutError:
                self._serving.cancel()
            self._serving = None
        self._socket.close()
        self.api.close()
