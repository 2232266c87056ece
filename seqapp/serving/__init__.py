"""An embedded model server that speaks TensorFlow Serving's REST and gRPC APIs.

`seqapp serve` behaves like `tensorflow_model_server` (same flags, URLs, protos,
status codes) so clients, tests and the demo run without Docker. Modules, one
concern each:

- `errors`: `ServingError(code, message)`, the gRPC status → HTTP mapping.
- `tensors`: JSON ⇄ numpy ⇄ TensorProto, b64.
- `servable`: one loaded version (TF1 session path, TF2 function path), `run`.
- `inference`: Predict/Classify/Regress/MultiInference/metadata semantics on a servable.
- `manager`: config, version policy, polling, labels, status.
- `batching`: server-side batching (TF Serving's BatchingParameters) on the event loop.
- `event_loop`: the one asyncio loop the front ends and the batch schedulers share.
- `rest`, `grpc_service`: the two front ends; `server`: wires them; `client`: both clients.

Importing this package is cheap; TensorFlow loads with the modules that need it.
"""
