"""Where tasks run: in this process (one worker), or on Ray actors: an embedded local Ray
(``ray.init()``) or an existing cluster (``ray.init(address=...)``), the same code either way.

Each actor loads the model once and runs one task at a time; actors ask for ``num_gpus``
(a fraction of a GPU when there are more workers than GPUs) or, on a cluster without GPUs, a
fraction of a CPU. A worker process that dies mid-task (killed, out of host memory) is
restarted by Ray and the task retried (``max_restarts`` / ``max_task_retries``); the task's
output is written through checked writes (temp -> verify -> rename), so a killed attempt
leaves no partial output, only a temp file that the driver's sweep removes.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

from engine.batch.tasks import FAILED, BatchTask, TaskResult, run_task
from engine.errors import Text2EarthError

MAX_RESTARTS = 3  # a worker killed more often than this is given up (its tasks fail)
CONNECT_TIMEOUT_S = 3.0
LOOPBACK = "127.0.0.1"  # the embedded Ray's node address: nothing listens on the network
READY_TIMEOUT_S = 600.0  # loading a model on a cold node can take minutes
# What a worker must be able to import: the engine and its heavy runtime.
WORKER_MODULES = ("engine.batch.tasks", "torch", "diffusers", "rasterio", "pyproj")
# Test-only fault injection: "die-once:<marker path>" kills the worker process at a task's
# first denoising step unless the marker exists (it is created first), as a kill -9 would.
FAULT_ENV = "TEXT2EARTH_BATCH_FAULT"
AUTH_MODE_ENV = "RAY_AUTH_MODE"  # Ray's token authentication switch


class ClusterError(Text2EarthError):
    """The Ray cluster cannot be reached or its workers cannot run the engine."""

    exit_code = 6
    kind = "cluster"


@dataclass(frozen=True)
class ModelSpec:
    """What each worker loads (once)."""

    model: str | None
    precision: str = "fp32"
    device: str | None = None  # None: the actor's GPU if Ray gave it one, else CPU
    compile: bool | None = False
    # CPU threads of each worker's torch (None: torch's default). On a CPU, fp32 pixels can
    # differ by one level between thread counts (oneDNN splits its sums per thread), so
    # pin it to get the same pixels from differently sized workers.
    threads: int | None = None


def load(spec: ModelSpec, device: str | None = None):
    import torch
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    from engine.model.checkpoint import load_model

    if spec.threads:
        torch.set_num_threads(spec.threads)
    for lib in (dlog, tlog):  # a worker's log is not the user's terminal
        lib.set_verbosity_error()
        lib.disable_progress_bar()

    return load_model(spec.model, device or spec.device or "cpu", precision=spec.precision,
                      compile=spec.compile)


def _fault_callback():
    """The step callback of the test-only fault hook (None when not armed)."""
    value = os.environ.get(FAULT_ENV, "")
    if not value.startswith("die-once:"):
        return None
    marker = value.removeprefix("die-once:")

    def die(pipe, step, timestep, tensors):
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return tensors
        os.close(fd)
        os._exit(9)  # as abrupt as SIGKILL: no cleanup, no exception handlers

    return die


class InProcess:
    """One worker: this process, the model loaded once."""

    def __init__(self, spec: ModelSpec, model=None):
        self.spec = spec
        self.model = model

    def run(self, tasks: list[BatchTask]) -> Iterator[TaskResult]:
        import torch

        before = torch.get_num_threads()
        try:
            if self.model is None:
                self.model = load(self.spec)
            if self.spec.threads:
                torch.set_num_threads(self.spec.threads)
            for task in tasks:
                yield run_task(task, self.model)
        finally:
            torch.set_num_threads(before)  # this process's other work keeps its threads

    def close(self) -> None:
        pass


class ItemWorker:
    """A Ray actor's body: the model loaded once, then one task per call."""

    def __init__(self, spec: ModelSpec):
        import ray

        device = spec.device or ("cuda" if ray.get_gpu_ids() else "cpu")
        self.model = load(spec, device)

    def ready(self) -> dict:
        return {"pid": os.getpid(), "device": str(self.model.device)}

    def run(self, task: BatchTask) -> TaskResult:
        return run_task(task, self.model, _fault_callback())


def split_address(address: str) -> tuple[str, int]:
    """host and port of a Ray address (``host:port`` or ``ray://host:port``)."""
    bare = address.removeprefix("ray://")
    host, _, port = bare.rpartition(":")
    default = 10001 if address.startswith("ray://") else 6379
    if not host:
        host, port = bare, ""
    try:
        return host.strip("[]"), int(port) if port else default
    except ValueError:
        raise ClusterError(f"the Ray address {address!r} is not host:port") from None


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail in seconds, naming the address, instead of Ray's long connection retries: the port
    must accept a connection and speak gRPC's HTTP/2 as a Ray head (GCS or Ray Client server)
    does; Ray's own client retries any other listener for minutes."""
    host, port = split_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            # A TLS cluster's gRPC wants a TLS handshake first: for it, the port alone.
            tls = os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true")
            why = None if tls else _not_http2(conn)
    except OSError as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise ClusterError(
            f"cannot reach the Ray cluster at {address} ({why}): start it there with "
            f"`ray start --head --port={port}`, or check the address and that the port is open"
        ) from None
    if why:
        raise ClusterError(
            f"the service at {address} is not a Ray cluster ({why}): give the address of a Ray "
            f"head (`ray start --head` prints it; its port is 6379 unless --port says otherwise, "
            f"10001 for ray://)"
        )


# RFC 9113 3.4: a client opens with this preface and a SETTINGS frame (here an empty one); an
# HTTP/2 server's first frame is its SETTINGS (type 4) on stream 0.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _not_http2(conn: socket.socket) -> str | None:
    """Why the peer is not an HTTP/2 server (None: it is). Ray's GCS and Ray Client speak gRPC,
    which runs on HTTP/2; a web server, a database or a silent port does not."""
    try:
        conn.sendall(_H2_PREFACE)
        head = b""
        while len(head) < 9:
            chunk = conn.recv(64)  # more than a frame header: a line to quote if not
            if not chunk:
                return "it closed the connection without an answer"
            head += chunk
    except TimeoutError:
        return f"no answer within {conn.gettimeout():g} s"
    except OSError as exc:
        return f"the connection failed: {exc.strerror or exc}"
    if head[3] != 4 or int.from_bytes(head[5:9], "big") & 0x7FFFFFFF:
        shown = head.split(b"\r\n", 1)[0][:60].decode("ascii", "replace")
        printable = shown if shown.isprintable() else "binary data"
        return f"it does not speak gRPC; it answered {printable!r}"
    return None


def shipping_advice(address: str | None, missing: str) -> str:
    where = f"the Ray cluster at {address}" if address else "the local Ray workers"
    return (
        f"the workers of {where} cannot import {missing}: the engine and its packages must be "
        "on every node. Ship them with the job: --runtime-env '{\"working_dir\": \"<the "
        "engine source folder>\", \"pip\": \"<its requirements.txt>\"}' (Ray installs them on "
        "each node), or install the engine on every node with the same Python and pins, or "
        "start the cluster from an image that has it"
    )


def missing_module(exc: BaseException) -> str | None:
    """The module a worker could not import, from a Ray error's text (None: another error)."""
    cause = getattr(exc, "cause", None)  # a RayTaskError carries the worker's exception
    if isinstance(cause, ModuleNotFoundError) and cause.name:
        return cause.name
    text = str(exc)
    marker = "No module named "
    if marker not in text:
        return None
    # the last one: Ray's text also quotes the traceback's source lines
    return text.rsplit(marker, 1)[1].split()[0].strip("'\":,")


def probe_imports(modules: tuple[str, ...]) -> dict:
    """Found without being imported (a cold torch import costs seconds): a missing one
    raises the ModuleNotFoundError that :func:`missing_module` reads."""
    import importlib.util

    for name in modules:
        if importlib.util.find_spec(name) is None:
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
    return {"pid": os.getpid()}


def check_workers(address: str | None, modules: tuple[str, ...] = WORKER_MODULES) -> None:
    """One Ray task that imports what a worker needs: a cluster whose nodes lack the engine
    fails here with advice on shipping the runtime environment."""
    import ray

    try:
        ray.get(ray.remote(num_cpus=0)(probe_imports).remote(modules), timeout=READY_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - Ray wraps the worker's ImportError many ways
        name = missing_module(exc)
        if name is None:
            raise
        raise ClusterError(shipping_advice(address, name)) from None


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host.lower() == "localhost"


@contextmanager
def _loopback_kept():
    """Ray rewrites a loopback node or cluster address to this machine's network address
    (``resolve_ip_for_localhost``) unless its single-machine switch is off, so a head on
    127.0.0.1 could not be joined and the embedded Ray would listen on the network. The switch
    is read when an address is resolved; ray.init resolves them all before it returns."""
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


@contextmanager
def _local_token_sent(address: str):
    """Send the token of this machine's heads (~/.ray/auth_token or RAY_AUTH_TOKEN_PATH) to the
    head at ``address`` on loopback, as Ray does by itself only for a cluster it finds, never
    for an address it is given; yields whether token authentication is on. Ray turns it on for
    the whole process and its children: ``RAY_AUTH_MODE``, then its Config re-read from the
    environment. Once ray.init has returned or failed the variable is set back, and so is the
    Config unless this process is now joined: its calls to the cluster need the token until
    ray.shutdown (:meth:`RayWorkers.close` re-reads it then)."""
    import ray

    try:  # private to Ray: another version may lack it
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
        from ray._raylet import Config
    except (ImportError, AttributeError):
        raise ClusterError(
            f"cannot join the Ray cluster at {address}: Ray {ray.__version__} is not the "
            "version the engine was made for; install the Ray version that the engine's "
            "requirements.txt names") from None
    before = os.environ.get(AUTH_MODE_ENV)
    try:
        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
        yield os.environ.get(AUTH_MODE_ENV) == "token"
    finally:
        if os.environ.get(AUTH_MODE_ENV) != before:
            if before is None:
                os.environ.pop(AUTH_MODE_ENV, None)
            else:
                os.environ[AUTH_MODE_ENV] = before
            if not ray.is_initialized():
                Config.initialize("")  # as Ray does when it sets it: the Config follows the env


def start_ray(address: str | None, workers: int, runtime_env: dict | None = None) -> bool:
    """Join ``address`` (checked first) or start an embedded local Ray of our own on loopback,
    sized for ``workers``; False when Ray was already running in this process (leave it
    running). Without an address, never a cluster that Ray finds by itself (``RAY_ADDRESS``,
    the ``ray_current_cluster`` file a stopped head may leave): ``address="local"``."""
    import ray

    if address:
        check_reachable(address)
    if ray.is_initialized():
        return False
    kwargs = dict(include_dashboard=False, log_to_driver=False, runtime_env=runtime_env,
                  ignore_reinit_error=True)
    if not address:
        with _loopback_kept():
            ray.init(address="local", num_cpus=max(1, workers), _node_ip_address=LOOPBACK,
                     **kwargs)
        return True
    client = address.startswith("ray://")  # Ray Client: its server, not this process, joins
    loopback = is_loopback(split_address(address)[0]) and not client
    token = os.environ.get(AUTH_MODE_ENV) == "token"
    try:
        with (_local_token_sent(address) if loopback else nullcontext(token) as token,
              _loopback_kept() if loopback else nullcontext()):
            ray.init(address=address, **kwargs)
    # RuntimeError: no node of it runs here; ValueError: ray:// without Ray Client installed
    except (ConnectionError, RuntimeError, ValueError) as exc:
        if ray.is_initialized():
            raise
        hint = "" if token or client else (
            "; a cluster with token authentication (Ray's default) needs RAY_AUTH_MODE=token "
            "and its token (RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token) here")
        raise ClusterError(f"cannot join the Ray cluster at {address}: "
                           f"{_last_line(exc)}{hint}") from None
    return True


def actor_resources(workers: int, gpus_per_worker: float | None = None) -> dict:
    """num_gpus per actor (a fraction when workers outnumber GPUs), else a CPU share."""
    import ray

    total = ray.cluster_resources()
    if gpus_per_worker is not None:
        return {"num_gpus": gpus_per_worker, "num_cpus": 0 if gpus_per_worker else 1}
    gpus = total.get("GPU", 0)
    if gpus:
        return {"num_gpus": min(1.0, gpus / workers), "num_cpus": 0}
    return {"num_gpus": 0, "num_cpus": min(1.0, total.get("CPU", 1) / workers)}


class RayWorkers:
    """``workers`` actors, each with the model loaded once; tasks go to whichever is free."""

    def __init__(self, spec: ModelSpec, workers: int, address: str | None = None,
                 runtime_env: dict | None = None, gpus_per_worker: float | None = None,
                 actor_env: dict | None = None):
        import ray

        self.address = address
        self.started = start_ray(address, workers, runtime_env)
        try:
            check_workers(address)
            options = actor_resources(workers, gpus_per_worker)
            if actor_env:
                options["runtime_env"] = {"env_vars": actor_env}
            cls = ray.remote(max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS)(ItemWorker)
            self.actors = [cls.options(**options).remote(spec) for _ in range(workers)]
            self.ready = self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _wait_ready(self) -> list[dict]:
        import ray

        try:
            return ray.get([a.ready.remote() for a in self.actors], timeout=READY_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - an actor that failed to load its model
            name = missing_module(exc)
            if name is not None:
                raise ClusterError(shipping_advice(self.address, name)) from None
            cause = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise ClusterError(f"the Ray workers could not load the model: {cause}") from None

    def run(self, tasks: list[BatchTask]) -> Iterator[TaskResult]:
        import ray

        pending = deque(tasks)
        inflight: dict = {}

        def submit(actor) -> None:
            if pending:
                task = pending.popleft()
                inflight[actor.run.remote(task)] = (actor, task)

        for actor in self.actors:
            submit(actor)
        alive = len(self.actors)
        while inflight:
            (ref,), _ = ray.wait(list(inflight), num_returns=1)
            actor, task = inflight.pop(ref)
            try:
                yield ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - the worker died past its retries
                yield TaskResult(task.key, task.item.id, task.out, FAILED, 0.0,
                                 f"{task.item.id}: the worker running it failed: "
                                 f"{_last_line(exc)}", "worker")
                if isinstance(exc, ray.exceptions.RayActorError):
                    alive -= 1  # given up by Ray: its share goes to the others
                    continue
            submit(actor)
        for task in pending if not alive else ():
            yield TaskResult(task.key, task.item.id, task.out, FAILED, 0.0,
                             f"{task.item.id}: not run: every worker was lost", "worker")

    def close(self) -> None:
        import ray

        for actor in getattr(self, "actors", []):
            ray.kill(actor)
        if self.started:
            ray.shutdown()
            if self.address:  # token mode that joining turned on ends with the connection
                from ray._raylet import Config

                Config.initialize("")


def _last_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(exc).__name__


def make_workers(spec: ModelSpec, workers: int, address: str | None = None,
                 runtime_env: dict | None = None, gpus_per_worker: float | None = None,
                 actor_env: dict | None = None) -> InProcess | RayWorkers:
    """In-process for one local worker; Ray otherwise (always Ray for a cluster address)."""
    if workers <= 1 and not address:
        return InProcess(spec)
    return RayWorkers(spec, workers, address, runtime_env, gpus_per_worker, actor_env)

