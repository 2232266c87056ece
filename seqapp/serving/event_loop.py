"""The serving event loop: one asyncio loop (uvloop) in a daemon thread per process.

The REST server, the gRPC server and every batch scheduler run on it, so a
request crosses no thread between its socket and its batch: only the model call
itself runs in a worker thread (TF releases the GIL there). Code on other
threads (model warmup in the manager's loader threads, tests, in-process
callers) reaches it through `call`.
"""

import asyncio
import threading

_lock = threading.Lock()
_loop = None
_thread = None


def get():
    """The running serving loop, started on first use.

    Returns:
        The `asyncio.AbstractEventLoop` (a uvloop loop) that runs in the
        "seqapp-serving-loop" daemon thread.
    """
    global _loop, _thread
    with _lock:
        if _loop is None:
            import uvloop

            loop = uvloop.new_event_loop()
            started = threading.Event()

            def run():
                asyncio.set_event_loop(loop)
                loop.call_soon(started.set)
                loop.run_forever()

            _thread = threading.Thread(target=run, name="seqapp-serving-loop", daemon=True)
            _thread.start()
            started.wait()
            _loop = loop
        return _loop


def in_loop():
    """Whether the caller runs on the serving loop's thread."""
    return _thread is not None and threading.current_thread() is _thread


def call(coroutine, timeout=None):
    """Runs `coroutine` on the serving loop and waits for its result, from any other thread.

    Args:
        coroutine: the coroutine object to run.
        timeout: seconds to wait at most; None for no limit.

    Returns:
        What the coroutine returns (its exception is raised here).

    Raises:
        RuntimeError: when called on the loop's own thread, which would wait for itself forever.
        concurrent.futures.TimeoutError: when `timeout` passed first (the coroutine is cancelled).
    """
    if in_loop():
        coroutine.close()
        raise RuntimeError("seqapp.serving.event_loop.call on the serving loop's thread: await instead")
    future = asyncio.run_coroutine_threadsafe(coroutine, get())
    try:
        return future.result(timeout)
    except BaseException:
        future.cancel()
        raise
