"""The local Functions host: runs a function app on this machine without Docker or Core Tools.

It reads the app settings (local.settings.json, else local.settings.example.json) into the environment,
starts Azurite unless AzureWebJobsStorage points elsewhere (and, with METERING_STORE=cosmos and no endpoint, the
local Cosmos-compatible server), discovers the functions from the app object,
serves the HTTP triggers with uvicorn, runs the timers, and feeds the Event Hub trigger from the local hub's
queues, one feed per partition, in threads of this process or in worker processes (workers.py).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import secrets
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metering import configuration
from metering.configuration import ConfigurationError
from metering.devhost.azurite import PROJECT_ROOT, Azurite
from metering.devhost.cosmos import CosmosServer
from metering.devhost.feed import HubFeed
from metering.devhost.http import FunctionKeysError, HttpHost, http_routes, parse_function_keys, trigger_of
from metering.devhost.timers import Timer, timers
from metering.devhost.workers import FeedOptions, FeedSpec, FeedWorkers, build_feeds, run_feeds

log = logging.getLogger(__name__)

LOCAL_STORAGE = "UseDevelopmentStorage=true"


def load_app_settings(root: Path = PROJECT_ROOT) -> Path | None:
    """Values of local.settings.json (else the example) into the environment; what is set already wins."""
    for name in ("local.settings.json", "local.settings.example.json"):
        path = root / name
        if path.exists():
            values = json.loads(path.read_text(encoding="utf-8")).get("Values", {})
            for key, value in values.items():
                os.environ.setdefault(key, str(value))
            return path
    return None


_DISCOVERED: dict[str, list[Any]] = {}


def discover(module: str) -> list[Any]:
    """The app's functions. azure-functions lets get_functions() run once per app object, so every host and
    test in a process shares this one list."""
    if module not in _DISCOVERED:
        _DISCOVERED[module] = importlib.import_module(module).app.get_functions()
    return _DISCOVERED[module]


def host_settings(root: Path = PROJECT_ROOT) -> dict[str, Any]:
    path = root / "host.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def retry_intervals(function: Any) -> dict[str, float]:
    """The backoff of the function's retry policy (`@app.retry`), as the host applies it to a failed batch;
    a policy's retry count is ignored: the feed never gives a batch up (see feed.py)."""
    setting = function.get_setting("retry_policy")
    if setting is None:
        return {}
    policy = setting.get_dict_repr()
    if policy.get("strategy") == "fixed_delay":
        delay = _seconds(policy["delay_interval"])
        return {"min_backoff_seconds": delay, "max_backoff_seconds": delay}
    return {
        "min_backoff_seconds": _seconds(policy["minimum_interval"]),
        "max_backoff_seconds": _seconds(policy["maximum_interval"]),
    }


def _seconds(interval: str) -> float:
    """An interval of a retry policy, `HH:MM:SS` (fractions of a second allowed)."""
    hours, minutes, seconds = interval.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


@dataclass
class DevHost:
    app_module: str = "function_app"
    port: int = 7071
    host: str = "127.0.0.1"
    data: Path = PROJECT_ROOT / ".azurite"
    root: Path = PROJECT_ROOT
    function_key: str = ""
    admin_key: str = ""
    azurite: Azurite | None = None
    cosmos: CosmosServer | None = None
    # Worker processes for the hub feeds; None: one per partition, as Event Hubs gives each partition a Function
    # instance of its own when the host scales out (a worker waiting on the store leaves its core to another);
    # 0: the feeds run in threads of this process (tests reach into them).
    workers: int | None = 0
    feeds: list[HubFeed] = field(default_factory=list)
    # The qualified names of the local hub's partitions as this run's feeds name them (in threads or workers).
    partitions: list[str] = field(default_factory=list)
    timers: list[Timer] = field(default_factory=list)
    _workers: FeedWorkers | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _server: Any = None

    @property
    def worker_processes(self) -> int:
        """How many worker processes feed the hub (0: threads of this process)."""
        return 0 if self._workers is None else len(self._workers.shares)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    def start(self) -> DevHost:
        load_app_settings(self.root)
        self.function_key = self.function_key or os.environ.get("METERING_FUNCTION_KEY") or secrets.token_urlsafe(24)
        self.admin_key = self.admin_key or os.environ.get("METERING_ADMIN_KEY") or secrets.token_urlsafe(24)
        if os.environ.get("AzureWebJobsStorage", LOCAL_STORAGE) == LOCAL_STORAGE:
            self.azurite = Azurite(self.data).start()
            os.environ["AzureWebJobsStorage"] = self.azurite.connection_string
        if os.environ.get("METERING_STORE") == "cosmos" and not os.environ.get("COSMOS__accountEndpoint"):
            # The local Cosmos-compatible server: in memory, and its commits are not atomic (README, stores).
            self.cosmos = CosmosServer().start()
            os.environ["COSMOS__accountEndpoint"] = self.cosmos.endpoint
            os.environ["COSMOS_KEY"] = self.cosmos.key
            os.environ["COSMOS_NON_ATOMIC_LOCAL"] = "true"
        functions = discover(self.app_module)
        # As the worker loads the app: a bad setting or catalog stops the host here, not its first request.
        problem = configuration.verify()
        if problem is not None:
            raise ConfigurationError(problem)
        self.timers = timers(functions)
        self._start_feeds(functions)
        routes = http_routes(functions)
        try:
            function_keys = parse_function_keys(
                os.environ.get("METERING_FUNCTION_KEYS"), {route.name for route in routes}
            )
        except FunctionKeysError as error:
            raise ConfigurationError(str(error)) from None
        self._serve(HttpHost(routes, self.function_key, self.admin_key, function_keys=function_keys))
        for timer in self.timers:
            self._spawn(f"timer {timer.name}", timer.run)
        return self

    def _start_feeds(self, functions: list[Any]) -> None:
        """One feed per partition of the local hub, each under a partition id of this run."""
        from metering.bootstrap import services  # noqa: PLC0415 (after the settings are in the environment)
        from metering.core.hub import hub_partition  # noqa: PLC0415
        from metering.transport.queue import local_partition_id, queue_client  # noqa: PLC0415

        settings = services().settings
        batch = host_settings(self.root).get("extensions", {}).get("eventHubs", {}).get("maxEventBatchSize", 100)
        run = uuid.uuid4().hex[:8]
        queues = settings.local_queues
        specs = [FeedSpec(queue, local_partition_id(run, i, len(queues))) for i, queue in enumerate(queues)]
        for function in functions:
            trigger = trigger_of(function)
            if trigger["type"] != "eventHubTrigger":
                continue
            if settings.uses_event_hub:
                log.warning("%s reads a real Event Hub: the dev host does not feed it", function.get_function_name())
                continue
            options = FeedOptions(
                hub=settings.event_hub_name,
                consumer_group=settings.event_hub_consumer_group,
                max_batch=int(batch),
                idle_seconds=0.2,
                retry=retry_intervals(function),
            )
            account = queue_client(os.environ["AzureWebJobsStorage"], queues[0]).account_name
            self.partitions = [hub_partition(f"{account}.queue", options.hub, spec.partition_id) for spec in specs]
            workers = len(specs) if self.workers is None else self.workers
            if workers:
                self._workers = FeedWorkers(self.app_module, self.root, specs, options, workers)
                self._workers.start()
            else:
                self.feeds = build_feeds(function, trigger, specs, options)
                self._threads.extend(run_feeds(self.feeds, self._stop))

    def _serve(self, app: HttpHost) -> None:
        import uvicorn  # noqa: PLC0415 (a dev-only dependency)

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        app.base_url = f"http://{self.host}:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._spawn("http", lambda stop: self._server.run(sockets=[sock]))
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start")
            time.sleep(0.02)

    def _spawn(self, name: str, target: Any) -> None:
        thread = threading.Thread(target=target, args=(self._stop,), name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        if self._workers is not None:
            self._workers.stop()
        if self._server is not None:
            self._server.should_exit = True
        for thread in self._threads:
            thread.join(timeout=10)
        if self.azurite is not None:
            self.azurite.stop()
        if self.cosmos is not None:
            self.cosmos.stop()

    def request_stop(self) -> None:
        self._stop.set()

    def wait(self) -> None:
        """Block until Ctrl-C or the stop event."""
        try:
            while not self._stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
