"""Connecting to Ray (the cluster a job was submitted to, or a local instance) and keeping the console quiet.

By default a pipeline's console shows its own lines only: the setup, one progress bar per phase,
a summary line per epoch, the results. Ray's internal INFO/WARNING lines, Ray Data's per-operator
bars and the workers' own output go to the logs (``O/logs/run.log`` for the driver's Python logging,
``O/logs/native.log`` for Ray's C++ lines in the driver, Ray's session logs for the workers);
``--verbose`` puts them all back on the console.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from typing import Callable, Iterator

import ray

from cars_ray.errors import RayStartError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# A Unix socket path holds at most 107 bytes (108 with its NUL). Ray puts its sockets at
# <temp>/session_<date>_<time>_<microseconds>_<pid>/sockets/plasma_store; this is that tail's longest length.
UNIX_SOCKET_PATH_MAX = 107
SESSION_SOCKET_TAIL = len("/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store")
PROBE_TIMEOUT_S = 3.0


def init_ray(args: argparse.Namespace, log_dir: str | None = None) -> str:
    """Join the cluster named by ``--address``/RAY_ADDRESS (as under ``ray job submit``), else start locally.
    Returns the dashboard's address as Ray gives it ("127.0.0.1:8265"), or "" (no dashboard, or Ray was
    already started by someone else)."""
    verbose = getattr(args, "verbose", False)
    if ray.is_initialized():
        configure_logging(verbose, log_dir)
        return ""
    address, source = ray_address(args)
    check_ray_start(address, source)  # before any log file or Ray process exists
    if log_dir and not verbose:
        native_output_to(os.path.join(log_dir, "native.log"))
    configure_logging(verbose, log_dir)
    # "local" starts a fresh instance rather than joining whatever cluster ran here last.
    options = {"logging_level": logging.INFO, "configure_logging": False, "log_to_driver": verbose}
    try:
        context = (ray.init(address=address, **options) if address
                   else start_local_ray(num_cpus=args.num_cpus, **options))
    except Exception as err:  # noqa: BLE001 - Ray raises bare Exception too ("The current node timed out during startup")
        raise RayStartError(ray_start_sentence(address, source, err)) from None
    quiet_ray_data(verbose)
    route_raylet_messages(verbose)
    return getattr(context, "dashboard_url", "") or ""


def start_local_ray(**kwargs):
    """``ray.init(address="local", **kwargs)``: a fresh local instance whose every process knows its own address.

    Ray's processes find "their" cluster for the state API (``ray.util.state``) from RAY_ADDRESS, else from
    the newest instance started on the machine (``/tmp/ray/ray_current_cluster``). Ray Train's
    ``PlacementGroupCleaner`` asks the state API whether the run's controller is alive; with a second Ray
    started on the same machine afterwards (a test run, another training) it asks THAT instance, finds no such
    actor and removes the running training's placement group. So the instance is started on a chosen GCS
    port with RAY_ADDRESS naming it in the environment its raylet, and so every worker, inherits; the
    caller's environment is restored afterwards. Returns Ray's context; raises what ``ray.init`` raises.
    """
    with socket.socket() as probe:  # a free port; Ray fails clearly in the rare case it is taken meanwhile
        probe.bind(("", 0))
        port = probe.getsockname()[1]
    host = kwargs.get("_node_ip_address") or ray.util.get_node_ip_address()  # the address Ray gives the head
    pinned = {"RAY_GCS_SERVER_PORT": str(port), "RAY_ADDRESS": f"{host}:{port}"}
    saved = {name: os.environ.get(name) for name in pinned}
    os.environ.update(pinned)
    try:
        return ray.init(address="local", **kwargs)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def watching_ctrl_c() -> Iterator[Callable[[], bool]]:
    """Yields a function telling whether a SIGINT arrived inside the block, whoever handled it.

    Ray Train v2's ``fit()`` installs its own SIGINT handler (it aborts the run, then exits the process or
    lets the dead controller's error surface), so neither our handler nor KeyboardInterrupt sees a Ctrl-C.
    Python's C-level handler writes every signal's number to the wakeup fd before any Python handler
    runs: that is where we look. On leaving, the wakeup fd and the SIGINT handler are put back (Ray leaves
    its handler installed). Off the main thread (a Tune trial) signals never arrive: always False.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    receiver, sender = socket.socketpair()
    receiver.setblocking(False)
    sender.setblocking(False)
    handler = signal.getsignal(signal.SIGINT)
    previous = signal.set_wakeup_fd(sender.fileno(), warn_on_full_buffer=False)
    seen = False

    def interrupted() -> bool:
        nonlocal seen
        with contextlib.suppress(BlockingIOError, OSError):
            while data := receiver.recv(512):
                seen = seen or signal.SIGINT in data
        return seen

    try:
        yield interrupted
    finally:
        interrupted()
        signal.set_wakeup_fd(previous)
        signal.signal(signal.SIGINT, handler)
        receiver.close()
        sender.close()


def check_ray_arguments(args: argparse.Namespace) -> None:
    """:func:`check_ray_start` for a pipeline's --address (else RAY_ADDRESS): called before its output
    folder is made, so a Ray that cannot start or be reached leaves nothing behind."""
    check_ray_start(*ray_address(args))


def ray_address(args: argparse.Namespace) -> tuple[str | None, str]:
    """(the address to join, or None to start a local Ray; where it came from: --address or RAY_ADDRESS)."""
    return (args.address, "--address") if args.address else (os.environ.get("RAY_ADDRESS") or None, "RAY_ADDRESS")


def ray_temp_dir() -> str:
    """The folder under which a local Ray puts its session (sockets included): Ray's own rule
    (RAY_TMPDIR, else TMPDIR on Linux, else /tmp; then ``ray/``)."""
    from ray._common.utils import get_default_ray_temp_dir

    return get_default_ray_temp_dir()


def check_ray_start(address: str | None, source: str = "RAY_ADDRESS") -> None:
    """Refuse, in one sentence that says what to change, a Ray start or join that cannot work: a temp folder
    too long for Ray's socket paths (starting locally), an address of the wrong kind (the dashboard's
    http:// address that ``ray job submit`` uses, any other scheme) or one where nothing listens.
    ``source`` names where the address came from (--address or RAY_ADDRESS). Raises RayStartError."""
    if not address or address in ("local", "auto"):
        if not address or address == "local":
            longest = len(ray_temp_dir()) + SESSION_SOCKET_TAIL
            if longest > UNIX_SOCKET_PATH_MAX:
                raise RayStartError(
                    f"Ray's temp folder {ray_temp_dir()} is too long for its socket paths ({longest} bytes, the limit is "
                    f"{UNIX_SOCKET_PATH_MAX}); set RAY_TMPDIR (or TMPDIR) to a shorter folder, e.g. RAY_TMPDIR=/tmp")
        return
    scheme, sep, rest = address.partition("://")
    if sep and scheme != "ray":
        what = "the dashboard's HTTP address, which `ray job submit` takes" if scheme in ("http", "https") \
            else f"an address with the scheme {scheme}://, which Ray does not join"
        fix = "unset RAY_ADDRESS" if source == "RAY_ADDRESS" else "leave --address out"
        raise RayStartError(f"{source}={address} is {what}; a pipeline joins a Ray cluster itself: {fix} to start a "
                            "local Ray, or give auto (the cluster `ray start` made here), HOST:6379 or ray://HOST:10001")
    host, colon, port = (rest if sep else address).rpartition(":")
    if not colon or not host or not port.isdigit():
        raise RayStartError(f"{source}={address} is not a Ray address; give auto, HOST:PORT (e.g. 127.0.0.1:6379) "
                            "or ray://HOST:10001")
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as err:
        raise RayStartError(f"{source}={address}: nothing answers at {host}:{port} ({err.strerror or err}); start Ray "
                            "there (`ray start --head`), give the address of a running cluster, or unset "
                            f"{'RAY_ADDRESS' if source == 'RAY_ADDRESS' else '--address'} to start a local Ray") from None


def ray_start_sentence(address: str | None, source: str, err: Exception) -> str:
    """One sentence for a failure of ray.init itself (what :func:`check_ray_start` could not foresee)."""
    text = " ".join(str(err).split())[:300]
    if isinstance(err, OSError) and ("AF_UNIX" in text or "too long" in text):
        return (f"Ray could not create its sockets under {ray_temp_dir()} ({text}); set RAY_TMPDIR to a shorter "
                "folder, e.g. RAY_TMPDIR=/tmp")
    if address and address != "local":
        return (f"could not join the Ray cluster at {source}={address} ({type(err).__name__}: {text}); check that "
                f"the cluster runs, or unset {source} to start a local Ray")
    return f"could not start a local Ray ({type(err).__name__}: {text}); see Ray's logs under {ray_temp_dir()}"


def native_output_to(path: str) -> None:
    """Send what native code writes to file descriptor 2 (Ray's C++ log lines) to ``path``; Python's
    ``sys.stderr`` keeps the terminal, so this program's own error sentences still show there."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    terminal = os.dup(2)
    native = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(native, 2)
    os.close(native)
    sys.stderr.flush()
    sys.stderr = os.fdopen(terminal, "w", buffering=1, encoding=sys.stderr.encoding or "utf-8", errors="replace")


def configure_logging(verbose: bool, log_dir: str | None) -> None:
    """Everything at INFO to ``log_dir/run.log``; on the console only errors, or everything with --verbose.

    Library warnings take the same road: ``warnings.warn`` (matplotlib's UserWarnings) is routed into
    logging, and a console handler some library put on the root logger (``logging.basicConfig`` at import,
    as onnxruntime's quantizer does, or implicitly by a module-level ``logging.warning``) is replaced by ours.
    """
    root, ray_logger = logging.getLogger(), logging.getLogger("ray")
    root.setLevel(logging.INFO)
    # Off, then on: a capture made earlier in this process under other warning filters would be kept as is.
    logging.captureWarnings(False)
    logging.captureWarnings(True)
    consoles = (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)
    for handler in [h for h in root.handlers if getattr(h, "cars_ray", False) or (
            type(h) is logging.StreamHandler and h.stream in consoles)]:
        root.removeHandler(handler)
    # Ray's logger prints to the console on its own (and ray.init drops its handlers, leaving Python's
    # last-resort printer): let its records reach the root's handlers below instead.
    ray_logger.setLevel(logging.INFO)
    ray_logger.propagate = True
    for handler in [h for h in ray_logger.handlers if not isinstance(h, logging.FileHandler)]:
        ray_logger.removeHandler(handler)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.INFO if verbose else logging.ERROR)
    console.cars_ray = True
    console.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(console)
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)
        log_file = logging.FileHandler(os.path.join(log_dir, "run.log"), encoding="utf-8")
        log_file.cars_ray = True
        log_file.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(log_file)


class WarningCount(logging.Handler):
    """Counts WARNING-and-above records (and keeps the first message) of a quiet console's libraries,
    so a pipeline without a log file can say how many it kept off the console."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count, self.first = 0, ""

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        self.first = self.first or record.getMessage().strip().splitlines()[0][:160]


def route_raylet_messages(verbose: bool) -> None:
    """The raylet's warnings to this driver ("(raylet) WARNING: 10 PYTHON worker processes have been
    started ...") print to stdout whatever ``log_to_driver`` says: Ray has no switch for them. Without
    --verbose they go to the ``ray.raylet`` logger instead (run.log), with --verbose to the console as Ray
    prints them. ``print_to_stdstream`` is Ray's internal printer; without log_to_driver its only caller
    is the thread that relays these messages."""
    import ray._private.worker as ray_worker

    printer = getattr(ray_worker, "print_to_stdstream", None)
    original = getattr(printer, "cars_ray_original", printer)
    if original is None:
        return
    if verbose:
        ray_worker.print_to_stdstream = original
        return
    logger = logging.getLogger("ray.raylet")

    def to_log(data, ignore_prefix: bool = False) -> None:
        for line in data.get("lines", []):
            logger.warning("(%s) %s", data.get("pid", "raylet"), line)

    to_log.cars_ray_original = original
    ray_worker.print_to_stdstream = to_log


def quiet_ray_data(verbose: bool) -> None:
    """Ray Data logs to its own console handler and draws a bar per operator: both only with --verbose."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = verbose
    context.print_on_execution_start = verbose
    for handler in logging.getLogger("ray.data").handlers:
        if not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.INFO if verbose else logging.ERROR)


def add_ray_arguments(parser) -> None:
    """--address, --num-cpus and --verbose, shared by every pipeline."""
    group = parser.add_argument_group("ray")
    group.add_argument("--address", default=None,
                       help="Ray cluster address, e.g. auto for the cluster `ray start` made here (default: RAY_ADDRESS, as set by `ray job submit`, else a new local instance)")
    group.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray instance (default: all)")
    group.add_argument("--verbose", action="store_true",
                       help="also show Ray's own log lines, Ray Data's bars and the workers' output on the console")
