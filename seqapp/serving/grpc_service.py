"""TF Serving's gRPC API: `tensorflow.serving.PredictionService` and `ModelService`,
implemented on the servicer classes `tensorflow-serving-api` generates, served by
`grpc.aio` on the serving event loop (`event_loop`).

Predict runs on the loop and awaits its batch there (its model call runs in a
thread pool when batching is off); the other methods, which may block (locks,
files, model loads), run whole in the server's thread pool. A `ServingError`
aborts the call with its own status code; anything unexpected is INTERNAL (and
logged) and the server keeps serving. Every call is reported to the server's
`metrics.ServerMetrics.record_request` (which counts the inference APIs, as it
does for REST).
"""

import asyncio
import concurrent.futures
import functools
import inspect
import logging
import time

import grpc
from tensorflow_serving.apis import model_management_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import prediction_service_pb2_grpc

from seqapp.serving import event_loop
from seqapp.serving import inference
from seqapp.serving.errors import ServingError
from seqapp.serving.errors import invalid_argument

log = logging.getLogger("seqapp.serving")


def _rpc(method):
    """Makes a servicer method an async gRPC handler that turns errors into gRPC statuses.

    A coroutine method runs on the loop; a plain one runs in the servicer's `executor`.
    """

    api = method.__name__
    on_loop = inspect.iscoroutinefunction(method)

    @functools.wraps(method)
    async def wrapper(self, request, context):
        start = time.perf_counter()
        failure = None
        try:
            if on_loop:
                response = await method(self, request)
            else:
                response = await asyncio.get_running_loop().run_in_executor(self.executor, method, self, request)
        except ServingError as error:
            failure = (error.code, error.message)
        except Exception as error:  # noqa: BLE001 - a bug must not take the server down
            log.exception("Unexpected error in %s", method.__name__)
            failure = (grpc.StatusCode.INTERNAL, f"Internal error: {type(error).__name__}: {error}")
        if self.metrics is not None:
            code = grpc.StatusCode.OK if failure is None else failure[0]
            self.metrics.record_request(_model_name(request), api, "GRPC", code, time.perf_counter() - start)
        if failure is None:
            return response
        await context.abort(*failure)

    return wrapper


def _model_name(request):
    if hasattr(request, "tasks"):  # MultiInferenceRequest
        return request.tasks[0].model_spec.name if request.tasks else ""
    return request.model_spec.name if hasattr(request, "model_spec") else ""


def _version_of(spec):
    """`(version, label)` a ModelSpec asks for (None, None for the latest)."""
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return spec.version.value, None
    if choice == "version_label":
        return None, spec.version_label
    return None, None


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """TF Serving's PredictionService.

    Args:
        manager: the `ModelManager`.
        executor: the thread pool for the methods that block.
        check_method_name: TF Serving's `--enable_signature_method_name_check`.
        metrics: the server's `metrics.ServerMetrics`, or None.
    """

    def __init__(self, manager, executor, check_method_name=False, metrics=None):
        self.manager = manager
        self.executor = executor
        self.check_method_name = check_method_name
        self.metrics = metrics

    def _servable(self, request):
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        return self._servable_for(request.model_spec)

    def _servable_for(self, spec):
        version, label = _version_of(spec)
        return self.manager.servable(spec.name, version, label)

    @_rpc
    async def Predict(self, request):
        return await inference.predict_async(self._servable(request), request, self.executor)

    @_rpc
    def Classify(self, request):
        return inference.classify(self._servable(request), request, self.check_method_name)

    @_rpc
    def Regress(self, request):
        return inference.regress(self._servable(request), request, self.check_method_name)

    @_rpc
    def MultiInference(self, request):
        return inference.multi_inference(self._servable_for, request, self.check_method_name)

    @_rpc
    def GetModelMetadata(self, request):
        return inference.metadata(self._servable(request), request)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """TF Serving's ModelService (status, config reload).

    Args:
        manager: the `ModelManager`.
        executor: the thread pool its methods run in.
    """

    metrics = None  # its calls are not counted

    def __init__(self, manager, executor):
        self.manager = manager
        self.executor = executor

    @_rpc
    def GetModelStatus(self, request):
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        version, label = _version_of(request.model_spec)
        return self.manager.status(request.model_spec.name, version, label)

    @_rpc
    def HandleReloadConfigRequest(self, request):
        if request.config.WhichOneof("config") != "model_config_list":
            raise invalid_argument("ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
                                   "ModelConfigList is currently supported")
        self.manager.reload(request.config)
        return model_management_pb2.ReloadConfigResponse()


class GrpcServer:
    """Both services on `host:port`, served by `grpc.aio` on the serving event loop.

    Args:
        manager: the `ModelManager`.
        host: the address to bind (127.0.0.1 unless told).
        port: the TCP port (0: any free one; see `port`).
        max_request_bytes: the largest request message.
        workers: threads of the pool the blocking methods run in.
        check_method_name: TF Serving's `--enable_signature_method_name_check`.
        metrics: the server's `metrics.ServerMetrics`, or None.

    Raises:
        ServingError: UNAVAILABLE when the address cannot be bound.
    """

    def __init__(self, manager, host="127.0.0.1", port=8500, max_request_bytes=64 * 1024 * 1024, workers=16,
                 check_method_name=False, metrics=None):
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="seqapp-grpc")
        self._prediction = PredictionService(manager, self._executor, check_method_name, metrics)
        self._models = ModelService(manager, self._executor)
        self._address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._max_request_bytes = int(max_request_bytes)
        try:
            # A grpc.aio server belongs to the loop it is made on.
            self._server, self.port = event_loop.call(self._create())
        except BaseException:
            self._executor.shutdown(wait=False)
            raise

    async def _create(self):
        server = grpc.aio.server(options=[
            ("grpc.max_receive_message_length", self._max_request_bytes),
            ("grpc.max_send_message_length", 2 ** 31 - 1),
            ("grpc.so_reuseport", 0),
        ])
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(self._prediction, server)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(self._models, server)
        try:
            bound = server.add_insecure_port(self._address)
        except RuntimeError as error:
            raise ServingError(grpc.StatusCode.UNAVAILABLE, f"Cannot bind gRPC to {self._address}: {error}") \
                from None
        if not bound:
            raise ServingError(grpc.StatusCode.UNAVAILABLE, f"Cannot bind gRPC to {self._address}")
        return server, bound

    def start(self):
        event_loop.call(self._server.start())

    def stop(self, grace=2.0):
        """Stops taking calls and lets those in flight finish for `grace` seconds at most."""
        event_loop.call(self._server.stop(grace))
        self._executor.shutdown(wait=False, cancel_futures=True)
