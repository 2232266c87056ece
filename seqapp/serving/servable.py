"""One loaded SavedModel version behind one interface, whatever TF version wrote it.

- TF1 SavedModels (no object graph: `SavedModelBuilder`, Estimator exports, TF
  Serving's own test models) run in a `tf.compat.v1.Session`, loaded with
  `tf.compat.v1.saved_model.loader.load`, through callables made with
  `Session._make_callable_from_options`. Like TF Serving's C++ runtime, such a
  callable does not check fed shapes against the signature (Python's
  `Session.run` would refuse `[3]` for a `[-1, 1]` placeholder; TF Serving feeds
  it and so do we). `tf.saved_model.load` cannot even load some of these (the
  ParseExample in half_plus_three), which is why this path exists.
- TF2 SavedModels (an object graph: `tf.saved_model.save`, Keras export) run
  through `tf.saved_model.load(...).signatures`; TF's function binding does
  whatever shape checks TF itself does.

`Servable.run(signature_name, {input: ndarray}, output_filter)` is the single
entry point for inference (`run_async` the same awaited on the serving event
loop); with server-side batching on, its `batcher` (a
`batching.BatchScheduler`) merges the validated calls into one `_run`;
`Servable.signature_defs` are the SignatureDef protos from saved_model.pb, used
for metadata and input validation.
"""

import contextlib
import logging
import threading
from pathlib import Path

import grpc
import numpy as np

from seqapp.serving import tensors
from seqapp.serving.errors import ServingError
from seqapp.serving.errors import failed_precondition
from seqapp.serving.errors import from_exception
from seqapp.serving.errors import invalid_argument

log = logging.getLogger("seqapp.serving")

DEFAULT_SIGNATURE = "serving_default"
SERVE_TAGS = ("serve",)


def import_tf():
    import tensorflow as tf

    try:  # registers tf-text ops; exports that tokenize in the graph need them
        import tensorflow_text  # noqa: F401
    except ImportError:  # pragma: no cover - an optional dependency of the models, not of us
        pass
    return tf


def _quiet_deprecation():
    """The TF1 loader is deprecated in favour of tf.saved_model.load, which cannot load every TF1
    SavedModel (see the module docstring): silence the warning it logs at each load."""
    try:
        from tensorflow.python.util import deprecation

        return deprecation.silence()
    except (ImportError, AttributeError):  # pragma: no cover - private module moved
        return contextlib.nullcontext()


def read_meta_graph(export_dir, tags=SERVE_TAGS):
    """The MetaGraphDef with exactly `tags` from `export_dir/saved_model.pb[txt]`.

    Raises:
        ServingError: NOT_FOUND when there is no SavedModel or no such tag set.
    """
    from google.protobuf import message
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    export_dir = Path(export_dir)
    pb, pbtxt = export_dir / "saved_model.pb", export_dir / "saved_model.pbtxt"
    proto = saved_model_pb2.SavedModel()
    try:
        if pb.is_file():
            proto.ParseFromString(pb.read_bytes())
        elif pbtxt.is_file():
            text_format.Parse(pbtxt.read_text(encoding="utf-8"), proto)
        else:
            raise ServingError(grpc.StatusCode.NOT_FOUND, "Could not find SavedModel .pb or .pbtxt at supplied "
                                                          f"export directory path: {export_dir}")
    except (message.DecodeError, text_format.ParseError, UnicodeDecodeError) as error:
        raise ServingError(grpc.StatusCode.DATA_LOSS,
                           f"Could not parse the SavedModel in {export_dir}: {error}") from None
    for meta_graph in proto.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == set(tags):
            return meta_graph
    available = [sorted(m.meta_info_def.tags) for m in proto.meta_graphs]
    raise ServingError(grpc.StatusCode.NOT_FOUND,
                       f"Could not find meta graph def matching supplied tags: {{ {' '.join(tags)} }}. "
                       f"Tag sets in the SavedModel: {available}")


@contextlib.contextmanager
def _model_errors():
    """Turns an error of a model call into a `ServingError` (TF errors keep their code)."""
    try:
        yield
    except ServingError:
        raise
    except Exception as error:  # noqa: BLE001 - TF errors keep their code
        raise from_exception(error) from None


class Servable:
    """A loaded version of a model. Subclasses implement `_run`."""

    kind = "abstract"
    batcher = None  # a batching.BatchScheduler (set by the manager when batching is on)

    def __init__(self, name, version, path, meta_graph):
        self.name = name
        self.version = int(version)
        self.path = Path(path)
        self.signature_defs = dict(meta_graph.signature_def)

    def signature(self, signature_name):
        """`(resolved_name, SignatureDef)`; an empty name means `serving_default`."""
        name = signature_name or DEFAULT_SIGNATURE
        if name not in self.signature_defs:
            raise failed_precondition(f'Serving signature key "{name}" not found.')
        return name, self.signature_defs[name]

    def prepare(self, signature_name, inputs, output_filter=None):
        """Checks one call of a signature: what `run` and `run_async` then compute.

        Args:
            signature_name: a key of `signature_defs` ("" = serving_default).
            inputs: `{input_name: np.ndarray}`, exactly the signature's inputs,
                each of the signature's dtype (strings: object arrays of bytes).
            output_filter: output names to compute, or None for all.

        Returns:
            `(resolved signature name, SignatureDef, {input: array}, [output names])`.

        Raises:
            ServingError: INVALID_ARGUMENT for bad inputs (names, dtypes),
                FAILED_PRECONDITION for an unknown signature or a sparse tensor.
        """
        name, signature = self.signature(signature_name)
        tensors.check_input_names(inputs, signature.inputs)
        arrays = {}
        for index, input_name in enumerate(sorted(signature.inputs)):
            info = signature.inputs[input_name]
            if info.WhichOneof("encoding") != "name":
                raise failed_precondition(f"Input '{input_name}' of signature '{name}' is not a dense tensor")
            array = np.asarray(inputs[input_name])
            expected = info.dtype
            got = tensors.dtype_enum_of(array)
            if got != expected:
                raise invalid_argument(f"Expects arg[{index}] ('{input_name}') to be {tensors.dtype_name(expected)} "
                                       f"but {tensors.dtype_name(got)} is provided")
            if got == tensors.types_pb2.DT_STRING and array.dtype != object:
                array = tensors.as_string_array(array)
            arrays[input_name] = array
        if output_filter:
            if len(set(output_filter)) != len(output_filter):
                raise invalid_argument(f"duplicate output tensor alias in output_filter: {list(output_filter)}")
            for output in output_filter:
                if output not in signature.outputs:
                    raise invalid_argument(f"output tensor alias not found in signature: {output} Outputs expected "
                                           f"to be in the set {{{','.join(sorted(signature.outputs))}}}.")
            outputs = list(output_filter)
        else:
            outputs = sorted(signature.outputs)
        for output in outputs:
            if signature.outputs[output].WhichOneof("encoding") != "name":
                raise failed_precondition(f"Output '{output}' of signature '{name}' is not a dense tensor")
        return name, signature, arrays, outputs

    def run(self, signature_name, inputs, output_filter=None):
        """Runs one signature, from any thread but the serving loop's (it may wait for a batch).

        Args:
            signature_name, inputs, output_filter: as `prepare`.

        Returns:
            `{output_name: np.ndarray}`.

        Raises:
            ServingError: as `prepare`, and the TF error's own code for errors while running.
        """
        prepared = self.prepare(signature_name, inputs, output_filter)
        with _model_errors():
            if self.batcher is not None:
                return self.batcher.run(*prepared)
            return self._run(*prepared)

    async def run_async(self, signature_name, inputs, output_filter=None, executor=None):
        """`run` awaited on the serving loop: the checks on the loop, then the call joins a batch
        (batching on) or runs in `executor` (batching off).

        Args:
            signature_name, inputs, output_filter: as `prepare`.
            executor: a `concurrent.futures.Executor` for unbatched calls; None for the loop's default.

        Returns:
            `{output_name: np.ndarray}`.

        Raises:
            ServingError: as `run`.
        """
        import asyncio

        prepared = self.prepare(signature_name, inputs, output_filter)
        with _model_errors():
            if self.batcher is not None:
                return await self.batcher.submit(*prepared)
            return await asyncio.get_running_loop().run_in_executor(executor, self._run, *prepared)

    def _run(self, name, signature, inputs, outputs):
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r}, {self.version}, {str(self.path)!r})"


class SessionServable(Servable):
    """TF1 SavedModel in a `tf.compat.v1.Session` (TF Serving's way of running it)."""

    kind = "tf1-session"

    def __init__(self, name, version, path, meta_graph, tags=SERVE_TAGS):
        super().__init__(name, version, path, meta_graph)
        tf = import_tf()
        self._graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=self._graph)
        with self._graph.as_default(), _quiet_deprecation():
            loaded = tf.compat.v1.saved_model.loader.load(self._session, list(tags), str(path))
        self.signature_defs = dict(loaded.signature_def)
        self._callables = {}
        self._lock = threading.Lock()

    def _callable(self, signature, feeds, fetches):
        key = (feeds, fetches)
        with self._lock:
            fn = self._callables.get(key)
            if fn is None:
                from tensorflow.core.protobuf import config_pb2

                options = config_pb2.CallableOptions()
                options.feed.extend(signature.inputs[n].name for n in feeds)
                options.fetch.extend(signature.outputs[n].name for n in fetches)
                # No shape check against the signature: TF Serving's C++ runtime does none either.
                fn = self._session._make_callable_from_options(options)
                self._callables[key] = fn
        return fn

    def _run(self, name, signature, inputs, outputs):
        feeds = tuple(sorted(inputs))
        fetches = tuple(outputs)
        fn = self._callable(signature, feeds, fetches)
        results = fn(*[inputs[n] for n in feeds])
        return {output: np.asarray(value) for output, value in zip(fetches, results)}


class FunctionServable(Servable):
    """TF2 SavedModel through `tf.saved_model.load` and its concrete signature functions."""

    kind = "tf2-function"

    def __init__(self, name, version, path, meta_graph, tags=SERVE_TAGS):
        super().__init__(name, version, path, meta_graph)
        tf = import_tf()
        self._tf = tf
        self._loaded = tf.saved_model.load(str(path), tags=list(tags))
        self._functions = dict(self._loaded.signatures)

    def _run(self, name, signature, inputs, outputs):
        fn = self._functions.get(name)
        if fn is None:  # e.g. __saved_model_init_op: a SignatureDef, not a function
            raise failed_precondition(f'Serving signature key "{name}" cannot be run (no function behind it).')
        tf = self._tf
        feeds = {n: tf.constant(value, dtype=tf.dtypes.as_dtype(signature.inputs[n].dtype))
                 for n, value in inputs.items()}
        results = fn(**feeds)
        return {output: results[output].numpy() for output in outputs}


def load(path, name="", version=0, tags=SERVE_TAGS):
    """Loads one version directory, choosing the TF1 or TF2 path by what wrote it.

    Raises:
        ServingError: with the code of the failure (NOT_FOUND for a directory
            that holds no SavedModel).
    """
    meta_graph = read_meta_graph(path, tags)
    tf2 = len(meta_graph.object_graph_def.nodes) > 0
    cls = FunctionServable if tf2 else SessionServable
    try:
        servable = cls(name, version, path, meta_graph, tags)
    except ServingError:
        raise
    except Exception as error:  # noqa: BLE001 - reported as the version's load error
        raise from_exception(error) from None
    log.info("Loaded %s version %s from %s (%s)", name, version, path, servable.kind)
    return servable
