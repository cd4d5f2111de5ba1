"""Which embedding model a commit may name, and which this host may load for it.

A ledger records the model its vectors were made with as a *name*, and nothing a
commit says is ever used as a path:

- :func:`check_model_id` (part of every verification: the hub's hook, ``kbgit verify``,
  standbys) refuses ids that look like paths (``/srv/x``, ``../x``, ``~/x``), checks the
  dimension of the models it knows and bounds ``fake:<dim>``;
- :class:`ModelAllowList` maps a name to something loadable from LOCAL settings only:
  the bundled model (with any backend suffix :data:`kbgit.embeddings.BACKEND_SUFFIXES`
  declares), ``fake:<dim>``, and ``local:<name>`` for a sentence-transformers directory
  named in ``kb.toml`` (``model``) or in the server's ``models`` setting. Anything else
  is refused before any model code runs.

>>> allowed = ModelAllowList.from_settings(["/opt/models/my-minilm"])   # doctest: +SKIP
>>> allowed.resolve("local:my-minilm")                                  # doctest: +SKIP
'/opt/models/my-minilm'
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Mapping

from .embeddings import BACKEND_SUFFIXES, BUNDLED_MODEL, BUNDLED_MODEL_ID, FAKE_PREFIX
from .errors import IntegrityError, ModelNotAllowedError

#: dimension of the bundled all-MiniLM-L6-v2
BUNDLED_DIM = 384
#: largest fake:<dim> a commit may name (the fake allocates dim floats per text)
MAX_FAKE_DIM = 4096
#: ids of local sentence-transformers directories: ``local:<directory name>``
LOCAL_PREFIX = "local:"
#: separates a model from its embedding backend (``all-MiniLM-L6-v2+onnx-int8``)
BACKEND_SEP = "+"
#: longest model id a commit may carry
MAX_ID_CHARS = 200
_LOCAL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_PATHLIKE = re.compile(r"^[/~.\\]|(^|/)\.\.(/|$)|[\\\x00-\x1f\x7f]")


def split_backend(model_id: str) -> tuple[str, str | None]:
    """Split ``name+backend`` into (name, backend); (name, None) without a suffix."""
    base, sep, backend = model_id.partition(BACKEND_SEP)
    return (base, backend) if sep else (model_id, None)


def local_model_id(directory: str | os.PathLike[str]) -> str:
    """Return the id a local sentence-transformers directory is recorded under."""
    return f"{LOCAL_PREFIX}{os.path.basename(os.path.normpath(directory))}"


def check_model_id(model_id: str, dim: int) -> None:
    """Refuse a commit's model id that is not a model name (a path), or a wrong dimension."""
    base, backend = split_backend(model_id)
    if not model_id or len(model_id) > MAX_ID_CHARS or _PATHLIKE.search(model_id):
        raise IntegrityError(
            f"model id {model_id[:MAX_ID_CHARS]!r} is not a model name: a commit names a "
            "model (the bundled one, fake:<dim>, local:<name>), never a path"
        )
    if base in (BUNDLED_MODEL, BUNDLED_MODEL_ID) and dim != BUNDLED_DIM:
        raise IntegrityError(
            f"model {model_id} makes {BUNDLED_DIM}-d vectors, the commit says {dim}"
        )
    if base.startswith(FAKE_PREFIX):
        digits = base[len(FAKE_PREFIX) :]
        if backend or not digits.isdigit() or not 2 <= int(digits) <= MAX_FAKE_DIM:
            raise IntegrityError(
                f"model {model_id!r}: expected fake:<dim>, 2 <= dim <= {MAX_FAKE_DIM}"
            )
        if int(digits) != dim:
            raise IntegrityError(
                f"model {model_id} makes {digits}-d vectors, the commit says {dim}"
            )
    if base.startswith(LOCAL_PREFIX) and not _LOCAL_NAME.fullmatch(base[len(LOCAL_PREFIX) :]):
        raise IntegrityError(f"model {model_id!r}: expected local:<directory name>")


@dataclasses.dataclass(frozen=True)
class ModelAllowList:
    """The models this host may load for a commit, from its own settings only."""

    #: ``local:<name>`` -> the directory a local setting names
    local: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Iterable[str]) -> ModelAllowList:
        """Build the list from local model settings (directories; other names are built in)."""
        local = {local_model_id(s): s for s in settings if s and os.path.isdir(s)}
        return cls(local)

    def names(self) -> list[str]:
        """Return the model names this host may load, for messages."""
        return [BUNDLED_MODEL, f"{FAKE_PREFIX}<dim>", *sorted(self.local)]

    def resolve(self, model_id: str) -> str:
        """Return the local setting that loads ``model_id``; refuse any other id."""
        base, backend = split_backend(model_id)
        suffix = f"{BACKEND_SEP}{backend}" if backend is not None else ""
        if backend is not None and backend not in BACKEND_SUFFIXES:
            raise ModelNotAllowedError(
                f"model {model_id}: unknown embedding backend {backend!r}",
                hint=f"known backends: {', '.join(sorted(BACKEND_SUFFIXES)) or '(none)'}",
            )
        if base in (BUNDLED_MODEL, BUNDLED_MODEL_ID) or (
            base.startswith(FAKE_PREFIX) and not backend
        ):
            return model_id
        if base in self.local:
            return self.local[base] + suffix
        raise ModelNotAllowedError(
            f"model {model_id[:MAX_ID_CHARS]!r} is not one this host may load "
            f"(allowed: {', '.join(self.names())})",
            hint="name a local model directory in the local settings (kb.toml model, "
            "or kbgit serve/standby --model DIR)",
        )
