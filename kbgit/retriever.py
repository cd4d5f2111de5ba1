"""Public path kept for users: ``from kbgit.retriever import KbgitHTTPRetriever``.

The retriever lives in :mod:`kbgit.langchain.retriever`.
"""

from .langchain.retriever import (
    KbgitHTTPRetriever,
    RemoteQueryError,
    ServiceError,
    hits_to_documents,
)

__all__ = ["KbgitHTTPRetriever", "RemoteQueryError", "ServiceError", "hits_to_documents"]
