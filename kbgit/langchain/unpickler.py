"""The one place kbgit unpickles: a LangChain ``index.pkl``, only with ``--trust-pickle``.

Imported lazily by :func:`kbgit.langchain.interop.read_folder` after the caller opted in; nothing
that loads a kbgit store (servers, standbys, hooks, verify) imports this module. The
unpickler admits only LangChain's docstore and Document classes, each replaced by an
inert stand-in that runs no code; any other global (``os.system``, ...) is refused.
"""

from __future__ import annotations

import io
import logging
import pickle
from pathlib import Path
from typing import Any

from ..errors import FormatError, PickleRefusedError

logger = logging.getLogger(__name__)


class _Inert:
    """Stand-in for an admitted class: records its pickled state and runs no code."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        self.state = state if isinstance(state, dict) else {}

    def fields(self) -> dict[str, Any]:
        """Return the object's attributes (pydantic keeps them under ``__dict__``)."""
        state = getattr(self, "state", {})
        inner = state.get("__dict__")
        return dict(inner) if isinstance(inner, dict) else dict(state)


class InertDocument(_Inert):
    """Stand-in for a LangChain Document."""


class _InertDocstore(_Inert):
    pass


#: the only globals an index.pkl may name; every one maps to an inert stand-in
_ADMITTED: dict[tuple[str, str], type] = {
    **{
        (mod, "Document"): InertDocument
        for mod in (
            "langchain_core.documents.base",
            "langchain_core.documents",
            "langchain.schema.document",
            "langchain.schema",
            "langchain.docstore.document",
            "langchain_community.docstore.document",
        )
    },
    **{
        (mod, "InMemoryDocstore"): _InertDocstore
        for mod in ("langchain_community.docstore.in_memory", "langchain.docstore.in_memory")
    },
    **{(mod, "set"): set for mod in ("builtins", "__builtin__")},  # protocol < 3 says __builtin__
    **{(mod, "frozenset"): frozenset for mod in ("builtins", "__builtin__")},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ADMITTED[(module, name)]
        except KeyError:
            raise PickleRefusedError(
                f"index.pkl names {module}.{name}, which a LangChain docstore never does",
                hint="the file is not a LangChain FAISS docstore (or is malicious); not loaded",
            ) from None


def unpickle_docstore(pkl: Path) -> tuple[dict[str, Any], dict[int, str]]:
    """Unpickle (docstore dict, index -> id mapping) through the restricted unpickler."""
    logger.warning(
        "unpickling %s because --trust-pickle was given (only LangChain docstore classes "
        "are admitted; a pickle can run code)",
        pkl,
    )
    try:
        loaded = _RestrictedUnpickler(io.BytesIO(pkl.read_bytes())).load()
    except PickleRefusedError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise FormatError(f"{pkl}: not a LangChain FAISS docstore pickle: {exc}") from exc
    if not (isinstance(loaded, tuple) and len(loaded) == 2):
        raise FormatError(f"{pkl}: expected (docstore, index_to_docstore_id)")
    docstore, mapping = loaded
    store_dict = docstore.fields().get("_dict") if isinstance(docstore, _InertDocstore) else None
    if not isinstance(store_dict, dict) or not isinstance(mapping, dict):
        raise FormatError(f"{pkl}: expected an InMemoryDocstore and a dict of ids")
    return store_dict, mapping
