"""Run a kbgit server: build services and followers from a ServeConfig, serve with waitress.

The HTTP socket opens first, so ``/ready`` answers 503 while the stores load; each store
is then opened (its replica created, re-cloned if corrupt, its HEAD verified and loaded
with the model), and only then does its follower start. Why waitress: one process with
threads shares the single in-memory snapshot per store, so a swap is atomic for every
request; it is pure Python, production-grade, and needs no C build.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path
from typing import Any

import faiss
from waitress import wasyncore

from kbgit.config import CONFIG_NAME, ServeConfig, StoreConfig
from kbgit.errors import ConfigError, KbgitError
from kbgit.format.ann import AnnSettings
from kbgit.format.limits import Limits
from kbgit.models import ModelAllowList
from kbgit.serving.follower import Follower
from kbgit.serving.service import EmbedderPool, KnowledgeService, ServiceRegistry

from . import create_app
from .limits import ConnectionLimits, LimitedServer

logger = logging.getLogger(__name__)

#: a primary looks at its own HEAD (one cheap git rev-parse) at least this often
PRIMARY_POLL = 1.0
#: answers up to this size leave in one send() (atomic for a proxy when a process dies)
RESPONSE_SEND_BYTES = 65536
#: room for multipart headers above ``max_upload`` before waitress itself refuses a body
UPLOAD_SLACK = 64 * 1024


def pin_threads() -> None:
    """Keep faiss to one OpenMP thread (21.7 ms vs 536 ms a query on 2 cores).

    OpenMP settings are per thread: the API also pins each worker thread on its first
    query; torch gets one intra-op thread from the embedder pool.
    """
    faiss.omp_set_num_threads(1)


def allowed_models(config: ServeConfig) -> ModelAllowList:
    """Return the models this server may load: ``models`` and each primary's kb.toml model."""
    settings = list(config.model_dirs)
    for spec in config.stores:
        if not spec.hub and (Path(spec.path) / CONFIG_NAME).is_file():
            with contextlib.suppress(ConfigError):  # a bad kb.toml: serving needs none
                settings.append(StoreConfig.load(spec.path).model)
    return ModelAllowList.from_settings(settings)


class Server:
    """Services, followers and the waitress server of one process.

    >>> srv = Server(ServeConfig(bind="127.0.0.1:0", stores=(StoreSpec("default", "./kb"),)))
    >>> srv.start()            # doctest: +SKIP
    >>> srv.url                # doctest: +SKIP
    'http://127.0.0.1:40123'
    """

    def __init__(self, config: ServeConfig, embedders: EmbedderPool | None = None) -> None:
        if not config.stores:
            raise KbgitError("no store to serve", hint="name a store or add [serve.stores.<name>]")
        self.config = config
        pool = embedders or EmbedderPool(threads=1, models=allowed_models(config))
        self.services = ServiceRegistry(pool)
        self.followers: dict[str, Follower] = {}
        for spec in config.stores:
            if not spec.hub and not (Path(spec.path) / ".git").is_dir():
                raise ConfigError(
                    f"{spec.path} is not a kbgit store",
                    hint=f"create it with: kbgit init {spec.path}, or give a hub to follow",
                )
            svc = self.services.add(
                KnowledgeService(
                    spec.name,
                    spec.path,
                    embedders=self.services.embedders,
                    manage_gc=True,
                    limits=Limits.of(config),
                    allowed_signers=config.allowed_signers,
                    ann=AnnSettings.of(config),
                )
            )
            interval = config.interval if spec.hub else min(config.interval, PRIMARY_POLL)
            self.followers[spec.name] = Follower(
                svc,
                hub=spec.hub,
                branch=spec.branch,
                interval=interval,
                backoff_max=max(config.backoff_max, interval),
            )
        self.app = create_app(self.services, config, self.followers)
        self._http: Any = None
        self._port = 0
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.preloaded = threading.Event()

    @property
    def port(self) -> int:
        """Return the bound port (useful with port 0)."""
        return self._port

    @property
    def url(self) -> str:
        """Return the base URL."""
        return f"http://{self.config.host}:{self.port}"

    def bind(self) -> None:
        """Open the listening socket (requests queue until :meth:`serve_forever`)."""
        pin_threads()
        try:
            # waitress, with request deadlines, eviction and a body limit (server/limits.py)
            self._http = LimitedServer(
                self.app,
                # waitress spools bodies up to 1 GiB by default before the app's own size
                # check runs: cap it just above the largest body the app accepts
                ConnectionLimits.from_config(
                    self.config, max_request_body=self.config.max_upload + UPLOAD_SLACK
                ),
                host=self.config.host,
                port=self.config.port,
                threads=self.config.threads,
                ident="kbgit",
                clear_untrusted_proxy_headers=True,
                # a TLS-terminating nginx on this host says https: the console's session
                # cookie is then marked Secure (the only use of the header)
                trusted_proxy="127.0.0.1",
                trusted_proxy_headers="x-forwarded-proto",
            )
        except OSError as exc:  # port in use, address not on this host, no permission
            raise ConfigError(
                f"cannot listen on {self.config.bind}: {exc.strerror or exc}",
                hint="choose a free port with --bind HOST:PORT",
            ) from exc
        # Send status line, headers and body in one send(): waitress's default (send_bytes=1)
        # sends the headers first, and a process killed between the two sends leaves nginx a
        # truncated answer it can no longer retry elsewhere (seen on ~1 in 4 kill -9 under
        # load; 0 in 6 with this). Set on the instance: the keyword is deprecated.
        self._http.adj.send_bytes = RESPONSE_SEND_BYTES
        self._port = int(self._http.effective_port)

    def preload(self) -> None:
        """Open every store (load index and model), then start its follower."""
        for name, follower in self.followers.items():
            if self._stopping.is_set():
                return
            try:
                follower.open()
            except Exception as exc:  # noqa: BLE001 - recorded in /health; the follower retries
                logger.error("%s: cannot load the store yet: %s", name, exc)
            follower.start()
        self.preloaded.set()

    def start(self, *, preload: bool = True) -> None:
        """Bind, then serve (and preload) in background threads (for tests and benches)."""
        self.bind()
        targets = [("kbgit-http", self._http.run)]
        if preload:
            targets.append(("kbgit-preload", self.preload))
        for name, target in targets:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def serve_forever(self) -> None:
        """Bind, preload in the background, serve in this thread until interrupted."""
        self.bind()
        loader = threading.Thread(target=self.preload, name="kbgit-preload", daemon=True)
        loader.start()
        logger.info("kbgit serving on %s", self.url)
        try:
            self._http.run()
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop followers and the HTTP server; wait for background threads."""
        self._stopping.set()
        for follower in self.followers.values():
            follower.stop()
        http, self._http = self._http, None
        if http is not None:
            sockets = getattr(http, "map", None) or http._map
            if any(t.is_alive() and t.name == "kbgit-http" for t in self._threads):
                # close the sockets inside the loop's own thread: closing them from here
                # while it sits in select() fails with EBADF
                http.trigger.pull_trigger(lambda: wasyncore.close_all(sockets))
            else:
                wasyncore.close_all(sockets)
            http.task_dispatcher.shutdown(timeout=5)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(10)
        self._threads.clear()
        for svc in self.services.services():
            svc.repo.close()  # its long-lived git cat-file
