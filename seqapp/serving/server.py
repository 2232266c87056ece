"""`seqapp serve`: the model manager plus the REST and gRPC front ends, both on one event loop
(`event_loop`), as the batch schedulers are.

Start order is TF Serving's: load the configured models first (a model that
fails to load is reported in its status, the server still starts), then open
the ports, so a client that can connect sees loaded models. The batching and
monitoring configs are read before anything loads: a bad file stops the start
with an error naming it.

Batching and Prometheus metrics are on unless turned off: without
`--batching_parameters_file` the server batches with `batching.DEFAULT_PARAMETERS_TEXT`
(= serving/batching.config), without `--monitoring_config_file` it serves metrics
at `/monitoring/prometheus/metrics` (= serving/monitoring.config).
"""

import dataclasses
import gc
import logging
import signal
import sys
import threading

from seqapp.errors import SeqappError
from seqapp.serving import process

log = logging.getLogger("seqapp.serving")


@dataclasses.dataclass
class ServerOptions:
    """tensorflow_model_server's flags (same names), plus the bind hosts and body limit."""

    port: int = 8500  # gRPC; 0 = off
    rest_api_port: int = 0  # 0 = off
    host: str = "127.0.0.1"  # gRPC bind address
    rest_api_host: str = "127.0.0.1"
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: int = 0
    file_system_poll_wait_seconds: int = 1
    rest_api_timeout_in_ms: int = 30000
    enable_model_warmup: bool = True
    enable_signature_method_name_check: bool = False
    max_request_bytes: int = 64 * 1024 * 1024
    # Threads for the calls that block (status, metadata, classify, regress, unbatched predict);
    # a batched predict waits on the event loop and holds none.
    rest_api_num_threads: int = 64
    grpc_max_threads: int = 64
    enable_batching: bool = True
    batching_parameters_file: str = ""  # "" = batching.DEFAULT_PARAMETERS_TEXT
    monitoring_config_file: str = ""  # "" = Prometheus at metrics.DEFAULT_PATH


class ModelServer:
    """Loads the models and serves them over REST and/or gRPC until `stop()`."""

    def __init__(self, options):
        self.options = options
        self.manager = None
        self.rest = None
        self.grpc = None
        self.grpc_port = None
        self.batching = None  # batching.BatchingOptions when batching is on
        self.metrics = None
        self.metrics_path = None  # where REST serves Prometheus text (None: not served)

    def _config(self):
        from seqapp.serving import manager

        o = self.options
        if o.model_config_file:
            if o.model_base_path:
                raise SeqappError("give either --model_config_file or --model_base_path, not both")
            return manager.read_config_file(o.model_config_file)
        if not o.model_base_path:
            raise SeqappError("give --model_base_path (with --model_name) or --model_config_file")
        return manager.single_model_config(o.model_name, o.model_base_path)

    def _batching(self):
        from seqapp.serving import batching

        o = self.options
        if not o.enable_batching:
            if o.batching_parameters_file:
                raise SeqappError("--batching_parameters_file is given but --enable_batching is false")
            return None
        try:
            if o.batching_parameters_file:
                return batching.read_options(o.batching_parameters_file)
            return batching.default_options()
        except ValueError as error:
            raise SeqappError(f"--batching_parameters_file: {error}") from None

    def _metrics_path(self):
        """The path REST serves metrics at, or None."""
        from seqapp.serving import config_protos
        from seqapp.serving import metrics

        o = self.options
        if not o.monitoring_config_file:
            return metrics.DEFAULT_PATH
        try:
            config = config_protos.read_monitoring_config(o.monitoring_config_file)
        except ValueError as error:
            raise SeqappError(f"--monitoring_config_file: {error}") from None
        prometheus = config.prometheus_config
        if not prometheus.enable:
            return None
        path = prometheus.path or metrics.DEFAULT_PATH
        if not path.startswith("/") or path.startswith("/v1/") or any(c in path for c in "?# "):
            raise SeqappError(f"--monitoring_config_file {o.monitoring_config_file}: prometheus_config.path "
                              f"{path!r} must be an absolute URL path outside /v1/")
        if not o.rest_api_port:
            raise SeqappError(f"--monitoring_config_file {o.monitoring_config_file} enables Prometheus metrics, "
                              "which are served on the REST port: set --rest_api_port")
        return path

    def start(self):
        o = self.options
        if not o.port and not o.rest_api_port:
            raise SeqappError("both --port and --rest_api_port are 0: nothing to serve")
        if o.max_request_bytes <= 0:
            raise SeqappError("--max_request_bytes must be positive")
        if o.rest_api_num_threads <= 0 or o.grpc_max_threads <= 0:
            raise SeqappError("--rest_api_num_threads and --grpc_max_threads must be positive")
        self.batching = self._batching()
        self.metrics_path = self._metrics_path()

        from seqapp.serving import grpc_service
        from seqapp.serving import manager
        from seqapp.serving import metrics
        from seqapp.serving import rest

        config = self._config()
        self.metrics = metrics.ServerMetrics(known_models=lambda: self.manager.model_names() if self.manager else ())
        self.manager = manager.ModelManager(config, poll_wait_seconds=o.file_system_poll_wait_seconds,
                                            enable_warmup=o.enable_model_warmup, batching=self.batching,
                                            metrics=self.metrics)
        self.manager.start()
        if o.model_config_file and o.model_config_file_poll_wait_seconds > 0:
            self.manager.watch_config_file(o.model_config_file, o.model_config_file_poll_wait_seconds)
        try:
            if o.port:
                self.grpc = grpc_service.GrpcServer(self.manager, o.host, o.port, o.max_request_bytes,
                                                    o.grpc_max_threads, o.enable_signature_method_name_check,
                                                    self.metrics)
                self.grpc_port = self.grpc.port
                self.grpc.start()
                log.info("Running gRPC ModelServer at %s:%d ...", o.host, self.grpc_port)
            if o.rest_api_port:
                api = rest.RestApi(self.manager, timeout_ms=o.rest_api_timeout_in_ms, workers=o.rest_api_num_threads,
                                   check_method_name=o.enable_signature_method_name_check, metrics=self.metrics,
                                   metrics_path=self.metrics_path)
                try:
                    self.rest = rest.RestServer(api, o.rest_api_host, o.rest_api_port, o.max_request_bytes)
                except OSError as error:
                    api.close()
                    raise SeqappError(f"cannot bind the REST API to {o.rest_api_host}:{o.rest_api_port}: {error}") \
                        from None
                self.rest.start()
                log.info("Exporting HTTP/REST API at:%s:%d ...", o.rest_api_host, self.rest.port)
                if self.metrics_path:
                    log.info("Prometheus metrics at http://%s:%d%s", o.rest_api_host, self.rest.port,
                             self.metrics_path)
            if self.batching is not None:
                log.info("Batching on: %s", self.batching)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, grace=2.0):
        if self.rest is not None:
            self.rest.stop()
            self.rest = None
        if self.grpc is not None:
            self.grpc.stop(grace)
            self.grpc = None
        if self.manager is not None:
            self.manager.stop()
            self.manager = None


def freeze_imports():
    """Imports what serving runs (TensorFlow, tf-text, the front ends) and moves every object made so far
    out of the garbage collector's reach (`gc.freeze`).

    Those objects, mostly TensorFlow's modules, are most of the process's, and each full collection
    walked them all: a 200-290 ms pause of every request in flight, which set REST's p99 at concurrency
    32 (bench/serving.py: 140-180 ms with them walked, 29 ms frozen). Models load after the freeze, so
    an unloaded version's objects are still collected.
    """
    from seqapp.serving import grpc_service  # noqa: F401
    from seqapp.serving import rest  # noqa: F401
    from seqapp.serving import servable

    servable.import_tf()
    gc.freeze()


def serve(options):
    """Runs a `ModelServer` until SIGINT/SIGTERM; prints one "ready" line when it serves."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    freeze_imports()
    server = ModelServer(options).start()
    parts = []
    if server.grpc is not None:
        parts.append(f"gRPC {options.host}:{server.grpc_port}")
    if server.rest is not None:
        parts.append(f"REST http://{options.rest_api_host}:{server.rest.port}")
    print(f"{process.READY_LINE} ({', '.join(parts)}; models: {', '.join(server.manager.model_names()) or 'none'})",
          flush=True)
    try:
        while not done.wait(1.0):
            pass
    finally:
        log.info("Shutting down")
        server.stop()
