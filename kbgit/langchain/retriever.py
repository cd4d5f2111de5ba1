"""A read-only LangChain retriever over a kbgit query service's HTTP API.

Point it at a primary, a standby, or the nginx in front of them: it only ever calls
``POST {base_url}/query`` and never needs the store, git or the model locally.

>>> from kbgit.langchain.retriever import KbgitHTTPRetriever
>>> r = KbgitHTTPRetriever(base_url="http://kb.internal", k=5)          # doctest: +SKIP
>>> r.invoke("how do I rotate keys")[0].metadata["source"]             # doctest: +SKIP
'runbooks/rotate-api-keys.md'
"""

from __future__ import annotations

from typing import Any

import requests
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr

from ..errors import QueryError, RemoteQueryError, ServiceError

#: seconds to wait for the TCP connection; a hung server should fail over fast (nginx: 1 s)
DEFAULT_CONNECT_TIMEOUT = 3.0
#: seconds to wait for the answer (query embedding on a busy 2-core box can take a while)
DEFAULT_READ_TIMEOUT = 30.0


def _server_message(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip()[:200] or resp.reason
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        err = err.get("message") or err
    return str(err or body)[:500]


def hits_to_documents(body: Any, url: str) -> list[Document]:
    """Turn a ``/query`` JSON answer into Documents; raise ServiceError if malformed."""
    try:
        commit = body.get("commit")
        docs = []
        for hit in body["hits"]:
            meta = dict(hit.get("meta") or {})
            meta.setdefault("source", hit["source"])
            meta["score"] = float(hit["score"])
            meta["commit"] = commit
            if "retrievers" in hit:
                meta["retrievers"] = dict(hit["retrievers"])
            docs.append(Document(id=str(hit["chunk_id"]), page_content=hit["text"], metadata=meta))
        return docs
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise ServiceError(f"{url} answered with an unexpected body: {exc!r}") from exc


class KbgitHTTPRetriever(BaseRetriever):
    """Retrieve chunks from a kbgit query service (``POST /query``), read-only.

    Each Document's ``id`` is the chunk id; its metadata holds the chunk's metadata plus
    ``source`` (document path), ``score`` (the mode's score: cosine, BM25 or fused),
    ``commit`` (the one commit every hit of that answer came from) and ``retrievers``
    (the rank each retriever gave it). ``mode`` (dense, lexical, hybrid), ``alpha`` and
    ``exact`` (score every vector, no ANN) are sent when set; the service's defaults apply
    otherwise.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    base_url: str
    k: int = 4
    #: keep only documents whose path starts with this prefix (or one of these prefixes)
    source: str | list[str] | None = None
    score_threshold: float | None = None
    #: dense, lexical or hybrid (None: the service's default)
    mode: str | None = None
    #: weight of dense in hybrid mode (None: the service's default)
    alpha: float | None = None
    #: True: exact dense search even where the service has an ANN index (None: its default)
    exact: bool | None = None
    #: sent as ``Authorization: Bearer <token>`` when set
    token: SecretStr | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    headers: dict[str, str] = Field(default_factory=dict)
    _session: requests.Session = PrivateAttr(default_factory=requests.Session)

    def _payload(self, query: str, overrides: dict[str, Any]) -> dict[str, Any]:
        overrides.pop("verbose", None)  # LangChain's own invoke() option
        unknown = set(overrides) - {"k", "source", "score_threshold", "mode", "alpha", "exact"}
        if unknown:
            raise QueryError(f"unknown search option(s): {', '.join(sorted(unknown))}")
        k = overrides.get("k", self.k)
        source = overrides.get("source", self.source)
        threshold = overrides.get("score_threshold", self.score_threshold)
        payload: dict[str, Any] = {"query": query, "k": k}
        if source is not None:
            payload["filter"] = {"source": source if isinstance(source, str) else list(source)}
        if threshold is not None:
            payload["score_threshold"] = threshold
        for key in ("mode", "alpha", "exact"):
            value = overrides.get(key, getattr(self, key))
            if value is not None:
                payload[key] = value
        return payload

    def query(self, query: str, **overrides: Any) -> dict[str, Any]:
        """POST one query and return the service's JSON answer (``commit``, ``hits``)."""
        url = self.base_url.rstrip("/") + "/query"
        headers = {"Accept": "application/json", **self.headers}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token.get_secret_value()}"
        try:
            resp = self._session.post(
                url,
                json=self._payload(query, overrides),
                headers=headers,
                timeout=(self.connect_timeout, self.read_timeout),
            )
        except requests.Timeout as exc:
            raise ServiceError(
                f"{url} timed out", hint="the service is down or overloaded; retry or fail over"
            ) from exc
        except requests.RequestException as exc:
            raise ServiceError(
                f"cannot reach {url}: {exc}", hint="is the service running?"
            ) from exc
        if 400 <= resp.status_code < 500:
            hint = "check the token" if resp.status_code in (401, 403) else None
            raise RemoteQueryError(
                f"{url} refused the query ({resp.status_code}): {_server_message(resp)}",
                status=resp.status_code,
                hint=hint,
            )
        if resp.status_code != 200:
            raise ServiceError(
                f"{url} failed ({resp.status_code}): {_server_message(resp)}",
                status=resp.status_code,
            )
        try:
            return resp.json()
        except ValueError as exc:
            raise ServiceError(f"{url} answered with non-JSON: {resp.text[:200]!r}") from exc

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        url = self.base_url.rstrip("/") + "/query"
        return hits_to_documents(self.query(query, **kwargs), url)


__all__ = [
    "KbgitHTTPRetriever",
    "RemoteQueryError",
    "ServiceError",
    "hits_to_documents",
]
