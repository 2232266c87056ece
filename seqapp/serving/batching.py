"""Server-side batching: concurrent `Servable.run` calls merged into one model call.

Configured like TF Serving (`--enable_batching --batching_parameters_file`, a
`BatchingParameters` text proto) and modelled on its BatchingSession and
SharedBatchScheduler (tensorflow_serving/batching/batching_session.cc,
tensorflow/core/kernels/batching_util/shared_batch_scheduler.h):

- One `BatchScheduler` per loaded servable version, on the serving event loop
  (`event_loop`): requests join its queues as futures, and each batch runs in
  one of its `num_batch_threads` worker threads; the rows of the result resolve
  the futures back on the loop. Requests are queued per (signature, output
  filter, input layout); a model call only ever sees rows of one version and one
  signature. (TF Serving shares one thread pool among all versions; here every
  version has its own `num_batch_threads`, so while a hot swap holds two
  versions there are twice as many batch threads.)
- Each queue holds at most `max_enqueued_batches` batches (the open one
  included); a batch leaves the queue when a worker thread takes it. A request
  that fits the open batch joins it; one that does not starts a new batch, or,
  when the queue is full, fails at once as TF Serving's shared batch scheduler
  fails it: UNAVAILABLE (HTTP 503), "The batch scheduling queue to which this
  task was submitted is full".
- A batch is run when it is full (`max_batch_size` rows, or
  `max_execution_batch_size` with splitting), when its first request has waited
  `batch_timeout_micros`, or at once when that is 0, by the first free worker
  thread; workers take queues round robin.
- `allowed_batch_sizes`: the merged batch is padded up to the next allowed
  size with copies of the first row of the last request (TF Serving's choice:
  a row known to be valid); the padding rows are sliced off the outputs.
- `pad_variable_length_inputs`: inputs that differ in a non-batch dimension are
  padded to the largest size in the batch with the first element of their own
  tensor (TF Serving's pad value), and the outputs keep the padded size (TF
  Serving cannot know which output dimension follows which input either). Only
  dimensions the signature declares unknown (-1) are padded; requests that
  differ in a declared dimension, or whose rank differs from the signature's,
  are queued apart instead of being merged into a batch the model rejects.
  Our text models take a string tensor of shape [batch]: strings of any length
  concatenate without padding, and the graph pads the tokens to the longest
  text of the merged batch behind its padding mask, so this option never
  applies to them. The cost is the long text's length for every row of the
  batch. For a model fed token ids it would be wrong: the pad value would be
  a real token and a mask input would be padded with "valid" values.
- A request with more rows than `max_batch_size` is refused with TF Serving's
  INVALID_ARGUMENT "Task size N is larger than maximum input batch size M",
  also with `enable_large_batch_splitting`, exactly as TF Serving does: the
  input limit stays `max_batch_size`; splitting only lets a request be cut
  into pieces that fill the open batch and further batches of
  `max_execution_batch_size` rows; its outputs are joined back in order.
- Requests that cannot be batched (an input without a batch dimension, inputs
  that disagree on it, zero rows) run unbatched. TF Serving refuses them with
  batching on; running them keeps every request that works without batching
  working with it.
- When a merged batch fails with an error a bad request can cause
  (INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE), each request of it is
  run again alone, so one bad request does not fail the others.
- `close()` (the version is unloaded): queued requests still run, later ones
  run unbatched, and the worker threads end when the queues are empty.
- `submit` is the coroutine the front ends await on the loop; `run` is the same
  for code on any other thread (warmup, in-process callers), which waits for it.
"""

import collections
import concurrent.futures
import dataclasses
import logging
import os
import threading
import time

import grpc
import numpy as np

from seqapp.serving import event_loop
from seqapp.serving.errors import ServingError
from seqapp.serving.errors import from_exception
from seqapp.serving.errors import invalid_argument

log = logging.getLogger("seqapp.serving")

# serving/batching.config: what `seqapp serve` and `seqapp demo` use unless told otherwise.
DEFAULT_PARAMETERS_TEXT = """\
max_batch_size { value: 64 }
batch_timeout_micros { value: 2000 }
max_enqueued_batches { value: 32 }
num_batch_threads { value: 2 }
allowed_batch_sizes: [1, 2, 4, 8, 16, 32, 64]
pad_variable_length_inputs: true
"""

# TF Serving's server.cc names its pool so when the parameters name none.
DEFAULT_THREAD_POOL_NAME = "model_server_batch_threads"
# TF Serving's shared_batch_scheduler.h: errors::Unavailable.
QUEUE_FULL_CODE = grpc.StatusCode.UNAVAILABLE
QUEUE_FULL_MESSAGE = "The batch scheduling queue to which this task was submitted is full"
# Errors a single bad request can cause: a failed merged batch is retried request by request.
_RETRY_ALONE = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
                          grpc.StatusCode.OUT_OF_RANGE})


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """BatchingParameters with TF Serving's defaults for unset fields
    (SharedBatchScheduler::QueueOptions / Options)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)
    allowed_batch_sizes: tuple = ()
    pad_variable_length_inputs: bool = False
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int = 0  # 0: max_batch_size
    thread_pool_name: str = DEFAULT_THREAD_POOL_NAME

    @property
    def execution_batch_size(self):
        """The most rows one model call gets."""
        if self.enable_large_batch_splitting and self.max_execution_batch_size > 0:
            return self.max_execution_batch_size
        return self.max_batch_size

    @classmethod
    def from_proto(cls, params, source="<BatchingParameters>"):
        """Options from a `config_protos.BatchingParameters`.

        Raises:
            ValueError: naming `source` and the broken rule (TF Serving's
                allowed_batch_sizes rules, and positive sizes, threads and queue).
        """
        from seqapp.serving import config_protos

        config_protos.validate_batching_parameters(params, source)
        values = {}
        for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads",
                     "max_execution_batch_size"):
            if params.HasField(name):
                values[name] = int(getattr(params, name).value)
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads", "max_execution_batch_size"):
            if name in values and values[name] <= 0:
                raise ValueError(f"{source}: {name} must be positive, not {values[name]}")
        if values.get("batch_timeout_micros", 0) < 0:
            raise ValueError(f"{source}: batch_timeout_micros must not be negative")
        if params.HasField("thread_pool_name") and params.thread_pool_name.value:
            values["thread_pool_name"] = params.thread_pool_name.value
        sizes = tuple(int(s) for s in params.allowed_batch_sizes)
        if any(s <= 0 for s in sizes):
            raise ValueError(f"{source}: allowed_batch_sizes must be positive, not {list(sizes)}")
        options = cls(allowed_batch_sizes=sizes, pad_variable_length_inputs=bool(params.pad_variable_length_inputs),
                      enable_large_batch_splitting=bool(params.enable_large_batch_splitting.value), **values)
        if options.execution_batch_size > options.max_batch_size:
            raise ValueError(f"{source}: max_execution_batch_size {options.execution_batch_size} exceeds "
                             f"max_batch_size {options.max_batch_size}")
        return options


def parse_parameters(text, source="<BatchingParameters>"):
    """BatchingOptions from BatchingParameters text. Raises ValueError naming `source`."""
    from google.protobuf import text_format

    from seqapp.serving import config_protos

    params = config_protos.BatchingParameters()
    try:
        text_format.Parse(text, params)
    except text_format.ParseError as error:
        raise ValueError(f"{source}: not a valid BatchingParameters text proto: {error}") from None
    return BatchingOptions.from_proto(params, source)


def read_options(path):
    """BatchingOptions from a `--batching_parameters_file`. Raises ValueError naming the file."""
    from seqapp.serving import config_protos

    return BatchingOptions.from_proto(config_protos.read_batching_parameters(path), path)


def default_options():
    """The options `serving/batching.config` holds (the embedded server's default)."""
    return parse_parameters(DEFAULT_PARAMETERS_TEXT, "<default batching parameters>")


# ---------------------------------------------------------------- queue items

class _Request:
    """One `submit()`: a future on the loop and its pieces (several only with large batch splitting)."""

    __slots__ = ("future", "results", "left", "enqueued")

    def __init__(self, future, pieces):
        self.future = future
        self.results = [None] * pieces
        self.left = pieces
        self.enqueued = time.monotonic()

    def finish(self, index, outputs=None, error=None):
        """Records one piece's outputs or error (on the loop); the first error fails the request."""
        if self.future.done():  # failed by another piece, or cancelled (the caller gave up)
            return
        if error is not None:
            # A fresh exception per request: one failure may answer every request of a batch.
            self.future.set_exception(ServingError(error.code, error.message))
            return
        self.results[index] = outputs
        self.left -= 1
        if self.left == 0:
            self.future.set_result(self.results)


class _Task:
    __slots__ = ("request", "index", "inputs", "size")

    def __init__(self, request, index, inputs, size):
        self.request = request
        self.index = index
        self.inputs = inputs
        self.size = size


class _Batch:
    __slots__ = ("tasks", "size", "opened")

    def __init__(self):
        self.tasks = []
        self.size = 0
        self.opened = None

    def add(self, task, now):
        if not self.tasks:
            self.opened = now
        self.tasks.append(task)
        self.size += task.size


class _Queue:
    __slots__ = ("key", "signature_name", "signature", "outputs", "paddable", "batches")

    def __init__(self, key, signature_name, signature, outputs, paddable):
        self.key = key
        self.signature_name = signature_name
        self.signature = signature
        self.outputs = outputs
        self.paddable = paddable  # {input: {dim: True}} dims padded with pad_variable_length_inputs
        self.batches = collections.deque([_Batch()])


# ---------------------------------------------------------------- scheduler

class BatchScheduler:
    """Merges concurrent calls of one servable version, on the serving event loop.

    The queues are touched only on the loop, so they need no lock; the model
    calls run in `num_batch_threads` worker threads of the scheduler's own pool.

    Args:
        run_fn: `(signature_name, signature, {input: array}, [outputs]) -> {output: array}`,
            the unbatched model call (`Servable._run`).
        options: `BatchingOptions`.
        model_name, version: for metrics and thread names.
        metrics: a `metrics.ServerMetrics` (or None).
    """

    def __init__(self, run_fn, options, model_name="", version=0, metrics=None):
        self._run_fn = run_fn
        self.options = options
        self.model_name = model_name
        self.version = version
        self._metrics = metrics
        self._limit = options.execution_batch_size
        self._timeout = options.batch_timeout_micros / 1e6
        self._loop = event_loop.get()
        self._pool = concurrent.futures.ThreadPoolExecutor(options.num_batch_threads,
                                                           thread_name_prefix=f"seqapp-batch-{model_name}-{version}")
        self._idle = options.num_batch_threads  # worker threads free to take a batch
        self._timer = None  # wakes the loop when the oldest open batch times out
        self._timer_at = None  # when it fires (time.monotonic(); uvloop's timer handles do not say)
        self._queues = {}
        self._turn = 0
        self._closed = False
        self._drained = threading.Event()
        self._dims = {}  # (signature name, input) -> declared shape or None

    # ------------------------------------------------------------ callers

    async def submit(self, signature_name, signature, inputs, outputs):
        """The outputs of `inputs` (validated arrays), computed within a merged batch; awaited on the loop.

        Raises:
            ServingError: INVALID_ARGUMENT for a request over `max_batch_size`,
                UNAVAILABLE for a full queue, or the model call's error.
        """
        return await self._join(signature_name, signature, inputs, outputs, self._admit(signature_name, inputs))

    def run(self, signature_name, signature, inputs, outputs):
        """`submit` for a caller on any thread but the loop's: waits for the outputs.

        Raises:
            ServingError: as `submit`.
        """
        size = self._admit(signature_name, inputs)
        if size is None:
            return self._run_fn(signature_name, signature, inputs, outputs)
        return event_loop.call(self._join(signature_name, signature, inputs, outputs, size))

    def num_enqueued_tasks(self):
        """Requests (pieces) waiting in the queues, not yet taken by a worker (from any thread)."""
        if event_loop.in_loop():
            return self._count_enqueued()
        # The queues change only on the loop: the count is taken there, between two of its steps.
        return event_loop.call(self._enqueued_on_loop())

    async def _enqueued_on_loop(self):
        return self._count_enqueued()

    def _count_enqueued(self):
        return sum(len(batch.tasks) for queue in self._queues.values() for batch in queue.batches)

    def close(self):
        """Stops taking requests (from any thread); queued ones still run, then the worker threads end."""
        self._closed = True
        self._loop.call_soon_threadsafe(self._pump)

    def join(self, timeout=None):
        """Waits until `close()` has drained the queues and the worker threads are done.

        Args:
            timeout: seconds to wait at most; None for no limit.
        """
        self._drained.wait(timeout)

    # ------------------------------------------------------------ queueing

    def _admit(self, signature_name, inputs):
        """The request's rows, or None when it runs unbatched (no batch dimension, or closed).

        Raises:
            ServingError: INVALID_ARGUMENT for more rows than `max_batch_size` (TF Serving's words).
        """
        size = _batch_size(inputs)
        if size is None or self._closed:
            return None
        if size > self.options.max_batch_size:
            raise invalid_argument(f"Task size {size} is larger than maximum input batch size "
                                   f"{self.options.max_batch_size}")
        if self._metrics is not None:
            self._metrics.record_input_batch_size(self.model_name, signature_name, size)
        return size

    async def _join(self, signature_name, signature, inputs, outputs, size):
        """Queues the request of `size` rows (on the loop) and waits for its rows; runs it unbatched
        in a thread when `size` is None (see `_admit`) or the scheduler has closed since."""
        request = None if size is None else self._schedule(signature_name, signature, inputs, outputs, size)
        if request is None:
            return await self._loop.run_in_executor(None, self._run_fn, signature_name, signature, inputs, outputs)
        self._pump()
        results = await request.future
        if len(results) == 1:
            return results[0]
        return {name: np.concatenate([part[name] for part in results], axis=0) for name in outputs}

    def _declared_shape(self, signature_name, signature, name):
        key = (signature_name, name)
        if key not in self._dims:
            from seqapp.serving import tensors

            self._dims[key] = tensors.shape_of_info(signature.inputs[name])
        return self._dims[key]

    def _key(self, signature_name, signature, inputs, outputs):
        """The queue a request joins, and the dims that padding may change."""
        layout, paddable = [], {}
        pad = self.options.pad_variable_length_inputs
        for name in sorted(inputs):
            array = inputs[name]
            shape = array.shape
            declared = self._declared_shape(signature_name, signature, name) if pad else None
            dims = []
            for dim in range(1, len(shape)):
                free = (declared is not None and len(declared) == len(shape) and declared[dim] is None
                        and array.size > 0)
                if free:
                    paddable.setdefault(name, set()).add(dim)
                dims.append(-1 if free else shape[dim])
            layout.append((name, array.dtype.str, len(shape), tuple(dims)))
        return (signature_name, tuple(outputs), tuple(layout)), paddable

    def _schedule(self, signature_name, signature, inputs, outputs, size):
        """Puts the request's pieces into its queue; None when the scheduler is closed.

        Raises:
            ServingError: QUEUE_FULL_CODE when the queue has no room for it.
        """
        if self._closed:
            return None
        key, paddable = self._key(signature_name, signature, inputs, outputs)
        options, limit = self.options, self._limit
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue(key, signature_name, signature, list(outputs), paddable)
        batches = queue.batches
        open_batch = batches[-1]
        if options.enable_large_batch_splitting:
            capacity = (options.max_enqueued_batches - len(batches)) * limit + (limit - open_batch.size)
            if size > capacity:
                self._forget_if_empty(queue)
                raise ServingError(QUEUE_FULL_CODE, f"{QUEUE_FULL_MESSAGE}; task size is {size} but scheduling "
                                                    f"capacity is only {capacity} (num_enqueued_batches="
                                                    f"{len(batches)}, max_enqueued_batches="
                                                    f"{options.max_enqueued_batches}, open_batch_size="
                                                    f"{open_batch.size}, max_execution_batch_size={limit})")
            pieces = []
            start, room = 0, limit - open_batch.size
            while start < size:
                if room == 0:
                    room = limit
                stop = min(size, start + room)
                pieces.append((start, stop))
                room -= stop - start
                start = stop
        else:
            if open_batch.size + size > limit and len(batches) >= options.max_enqueued_batches:
                self._forget_if_empty(queue)
                raise ServingError(QUEUE_FULL_CODE, QUEUE_FULL_MESSAGE)
            pieces = [(0, size)]
        request = _Request(self._loop.create_future(), len(pieces))
        now = time.monotonic()
        for index, (start, stop) in enumerate(pieces):
            part = inputs if len(pieces) == 1 else {n: a[start:stop] for n, a in inputs.items()}
            task = _Task(request, index, part, stop - start)
            if batches[-1].size + task.size > limit:
                batches.append(_Batch())
            batches[-1].add(task, now)
        return request

    def _forget_if_empty(self, queue):
        """Drops a queue that holds nothing: keys may be many (shapes); only live queues are kept."""
        if len(queue.batches) == 1 and not queue.batches[0].tasks:
            del self._queues[queue.key]

    # ------------------------------------------------------------ workers

    def _take(self, now):
        """A batch ready to run (and its queue), or None."""
        queues = list(self._queues.values())
        count = len(queues)
        for offset in range(count):
            queue = queues[(self._turn + offset) % count]
            batches = queue.batches
            batch = None
            if len(batches) > 1:
                batch = batches.popleft()
            else:
                tail = batches[0]
                if tail.tasks and (tail.size >= self._limit or self._closed
                                   or now - tail.opened >= self._timeout):
                    batch = batches.popleft()
                    batches.append(_Batch())
            if batch is not None:
                self._turn = (self._turn + offset + 1) % max(count, 1)
                self._forget_if_empty(queue)
                return queue, batch
        return None

    def _wait_time(self, now):
        waits = [q.batches[0].opened + self._timeout - now for q in self._queues.values()
                 if len(q.batches) == 1 and q.batches[0].tasks]
        return max(0.0, min(waits)) if waits else None

    def _pump(self):
        """Hands ready batches to free worker threads, and sets the timer for the next open batch's timeout.

        Runs on the loop after every change: a request queued, a batch done, a timeout, `close()`.
        """
        now = time.monotonic()
        while self._idle > 0:
            taken = self._take(now)
            if taken is None:
                break
            self._idle -= 1
            queue, batch = taken
            done = self._loop.run_in_executor(self._pool, self._process, queue, batch)
            done.add_done_callback(lambda future, batch=batch: self._finished(batch, future))
        wait = self._wait_time(now) if self._idle > 0 else None
        # A timer that fires no later than needed is kept: requests joining an open batch leave its
        # deadline as it was, and re-arming for each of them would cost a timer per request.
        if self._timer is not None and (wait is None or self._timer_at > now + wait):
            self._timer.cancel()
            self._timer = None
        if wait is not None and self._timer is None:
            self._timer = self._loop.call_later(wait, self._fire)
            self._timer_at = now + wait
        if self._closed and not self._queues and self._idle == self.options.num_batch_threads \
                and not self._drained.is_set():
            self._pool.shutdown(wait=False)
            self._drained.set()

    def _fire(self):
        self._timer = None
        self._pump()

    def _finished(self, batch, future):
        """Resolves a batch's requests with the rows its worker computed (on the loop)."""
        self._idle += 1
        error = future.exception()
        if error is not None:  # a bug in our code, not the model's error: never leave a caller waiting
            log.error("Batch of %s version %s failed", self.model_name, self.version, exc_info=error)
            failure = from_exception(error)
            for task in batch.tasks:
                task.request.finish(task.index, error=failure)
        else:
            for task, outputs, failure in future.result():
                task.request.finish(task.index, outputs, failure)
        self._pump()

    def _process(self, queue, batch):
        """Runs one batch in a worker thread: `[(task, outputs or None, ServingError or None)]`."""
        if self._metrics is not None:
            now = time.monotonic()
            self._metrics.record_queuing_latency(self.options.thread_pool_name,
                                                 [now - t.request.enqueued for t in batch.tasks])
        return self._execute(queue, batch.tasks)

    def _padded_size(self, size):
        for allowed in self.options.allowed_batch_sizes:
            if allowed >= size:
                return allowed
        return size

    def _merge(self, queue, tasks, padded):
        merged = {}
        for name in tasks[0].inputs:
            arrays = [t.inputs[name] for t in tasks]
            dims = queue.paddable.get(name)
            if dims:
                target = [max(a.shape[d] for a in arrays) for d in range(arrays[0].ndim)]
                arrays = [_pad_to(a, target, dims) for a in arrays]
            extra = padded - sum(t.size for t in tasks)
            if extra > 0:
                arrays.append(np.repeat(arrays[-1][:1], extra, axis=0))
            merged[name] = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
        return merged

    def _execute(self, queue, tasks):
        """One model call for `tasks`: `[(task, outputs or None, ServingError or None)]`."""
        size = sum(t.size for t in tasks)
        padded = self._padded_size(size)
        try:
            merged = self._merge(queue, tasks, padded)
            results = self._run_fn(queue.signature_name, queue.signature, merged, queue.outputs)
        except Exception as error:  # noqa: BLE001 - the model's error goes to the callers
            failure = from_exception(error)
            if len(tasks) > 1 and failure.code in _RETRY_ALONE:
                return [answer for task in tasks for answer in self._execute(queue, [task])]
            return [(task, None, failure) for task in tasks]
        if self._metrics is not None:
            self._metrics.record_batch(self.model_name, queue.signature_name, size, padded)
        for name in queue.outputs:
            value = results[name]
            if value.ndim == 0:
                failure = ServingError(grpc.StatusCode.FAILED_PRECONDITION, "Batched output tensor has 0 dimensions")
                return [(task, None, failure) for task in tasks]
            if value.shape[0] != padded:
                failure = ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                                       "Batched output tensor's 0th dimension does not equal the sum of the 0th "
                                       f"dimension sizes of the input tensors (output '{name}' has {value.shape[0]} "
                                       f"rows for {padded} input rows)")
                return [(task, None, failure) for task in tasks]
        answers, start = [], 0
        for task in tasks:
            stop = start + task.size
            answers.append((task, {name: results[name][start:stop] for name in queue.outputs}, None))
            start = stop
        return answers


def _batch_size(inputs):
    """The shared 0th dimension of `inputs`, or None when they cannot be batched."""
    size = None
    for array in inputs.values():
        if array.ndim == 0:
            return None
        if size is None:
            size = array.shape[0]
        elif array.shape[0] != size:
            return None
    return size if size else None


def _pad_to(array, target, dims):
    """`array` padded at the end of `dims` up to `target`, with its own first element (TF Serving's value)."""
    shape = list(array.shape)
    wanted = [target[d] if d in dims else shape[d] for d in range(len(shape))]
    if wanted == shape:
        return array
    out = np.empty(wanted, dtype=array.dtype)
    out[...] = array.flat[0]
    out[tuple(slice(0, s) for s in shape)] = array
    return out
