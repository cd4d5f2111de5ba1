"""Exceptions kbgit raises on purpose.

KbgitError
├── ConfigError        bad or missing settings (kb.toml, environment, arguments)
│   └── ModelNotAllowedError  a commit names a model this host's settings do not allow
├── GitError           a git command failed; carries git's stderr
│   └── HubMovedError  the hub has commits this store does not have (another writer pushed)
│       └── FencedError  the hub records another store as the writer (a promotion fenced this one)
├── LockedError        another writer holds the store's lock
├── IntegrityError     a commit whose files do not match its manifest and ledger
│   ├── FormatError    a store written in a format this version cannot read
│   └── SignatureError a commit not signed by a key in the allowed signers
├── DocumentError      one source file that cannot be read (reported; the others still ingest)
├── QueryError         a query that cannot be answered as asked (bad k, unknown filter, ...)
│   └── RemoteQueryError  a query service refused the query (4xx) (KbgitHTTPRetriever)
├── ServiceError       a query service could not answer: unreachable, 5xx, malformed reply
├── EvalError          an eval set that is malformed, or an eval that cannot run
├── NotReadyError      a served store has no verified snapshot loaded yet (HTTP 503)
└── PickleRefusedError a LangChain index.pkl kbgit will not unpickle (not trusted / not LangChain)
"""

from __future__ import annotations


class KbgitError(Exception):
    """Base for every error kbgit raises on purpose."""

    #: what the user can do about it; shown by the CLI under the message
    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class ConfigError(KbgitError):
    """Settings that are missing, malformed or contradictory."""


class ModelNotAllowedError(ConfigError):
    """A commit names an embedding model this host's own settings do not allow it to load."""


class GitError(KbgitError):
    """A git command failed."""

    def __init__(self, message: str, *, stderr: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.stderr = stderr


class HubMovedError(GitError):
    """The hub's branch is not an ancestor of ours: another writer pushed."""


class FencedError(HubMovedError):
    """The hub's writer record (refs/kbgit/writer) names another store: this one must not write."""


class LockedError(KbgitError):
    """Another process holds the writer lock of this store."""


class IntegrityError(KbgitError):
    """A commit whose ledger, manifest, index files or documents disagree."""


class FormatError(IntegrityError):
    """A store format version this release does not understand."""


class SignatureError(IntegrityError):
    """A commit that is unsigned, or signed by a key not in the allowed signers."""


class QueryError(KbgitError):
    """A query that is malformed or asks for something that does not exist."""


class EvalError(KbgitError):
    """An eval set that is malformed, or an eval that cannot run as asked."""


class DocumentError(KbgitError):
    """A source document that is unsupported, empty, binary, undecodable or corrupt."""


class NotReadyError(KbgitError):
    """The store has no verified snapshot loaded yet (the server answers 503)."""


class PickleRefusedError(KbgitError):
    """An ``index.pkl`` that kbgit will not unpickle (not trusted, or not a LangChain one)."""


class ServiceError(KbgitError):
    """The query service could not answer: unreachable, timed out, 5xx or a malformed reply."""

    def __init__(self, message: str, *, status: int | None = None, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.status = status


class RemoteQueryError(QueryError):
    """The query service refused the query as asked (a 4xx answer: bad k, filter, token)."""

    def __init__(self, message: str, *, status: int, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.status = status
