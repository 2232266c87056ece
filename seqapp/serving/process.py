"""`seqapp serve` as a child process, and free ports to run servers on.

For tests, benchmarks and the demo: `free_port` for an embedded
`server.ModelServer`, `ServeProcess` where a real `python -m seqapp serve`
process is wanted (its own interpreter, signals, CPU time of its own).
"""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

HOST = "127.0.0.1"
# The start of the line `seqapp.serving.server.serve` prints once both front ends listen.
READY_LINE = "seqapp serve: ready"
LOG_TAIL_CHARS = 5000


def free_port(host=HOST):
    """Returns a TCP port of `host` that nothing is bound to right now.

    The port is released again before it is returned, so another process may
    take it first; good enough for tests, benchmarks and the demo.

    Args:
        host: the address to probe.

    Returns:
        The port number.

    Example:

    ```python
    options = server.ServerOptions(port=free_port(), rest_api_port=free_port())
    ```
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ServeProcess:
    """`python -m seqapp serve ...` as a child process on free ports of 127.0.0.1.

    Starts the process at once, with `--port` (gRPC) and `--rest_api_port`
    set to free ports (0, off, for a front end that is not wanted), its
    stdout and stderr in `log_path`, and `TF_CPP_MIN_LOG_LEVEL=2`,
    `PYTHONUNBUFFERED=1` added to the environment. `wait_ready` waits until
    it serves; `stop` (or the end of a `with` block) ends it.

    Args:
        args: the other `seqapp serve` flags and their values (each passed
            through `str`).
        log_path: file for the server's stdout and stderr (overwritten).
        rest: whether to open the REST front end.
        grpc: whether to open the gRPC front end.
        cwd: working directory of the process; None for this process's.

    Example:

    ```python
    args = ["--model_name", "default", "--model_base_path", "saved_models/sentiment"]
    with ServeProcess(args, "serve.log").wait_ready() as server:
        urllib.request.urlopen(f"{server.rest_url}/v1/models/default")
        grpc.insecure_channel(server.grpc_target)
    ```
    """

    def __init__(self, args, log_path, rest=True, grpc=True, cwd=None):
        self.rest_port = free_port() if rest else 0
        self.grpc_port = free_port() if grpc else 0
        self.log_path = Path(log_path)
        self.args = ["--port", str(self.grpc_port), "--rest_api_port", str(self.rest_port), *map(str, args)]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen([sys.executable, "-m", "seqapp", "serve", *self.args], stdout=self._log,
                                        stderr=subprocess.STDOUT, env=env, cwd=cwd)

    @property
    def rest_url(self):
        """`http://127.0.0.1:<rest_port>`."""
        return f"http://{HOST}:{self.rest_port}"

    @property
    def grpc_target(self):
        """`127.0.0.1:<grpc_port>`, for `grpc.insecure_channel`."""
        return f"{HOST}:{self.grpc_port}"

    def log_text(self):
        """Everything the server has written so far."""
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout=240):
        """Waits until the server prints its ready line.

        Args:
            timeout: seconds to wait at most.

        Returns:
            This `ServeProcess`.

        Raises:
            RuntimeError: the process exited, or was not ready in time (it is
                stopped then); the message ends with the tail of its log.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if READY_LINE in self.log_text():
                return self
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"seqapp serve exited with {self.process.returncode}:\n"
                                   f"{self.log_text()[-LOG_TAIL_CHARS:]}")
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"seqapp serve not ready after {timeout}s:\n{self.log_text()[-LOG_TAIL_CHARS:]}")

    def alive(self):
        """Whether the process is still running."""
        return self.process.poll() is None

    def cpu_seconds(self):
        """User plus system CPU seconds the server has used so far (from /proc: Linux only)."""
        # The command name in parentheses may hold spaces, so the fields are counted after its ")".
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout=15):
        """Ends the server: SIGTERM, then SIGKILL if it has not exited after `timeout` seconds; closes the log."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()
