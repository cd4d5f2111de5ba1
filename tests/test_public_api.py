"""The public surface is declared in kbgit.__all__ and pinned here (httpx style)."""

from __future__ import annotations

import kbgit

EXPECTED_ALL = [
    "ConfigError",
    "DocumentError",
    "Embedder",
    "FakeEmbedder",
    "FileReport",
    "FormatError",
    "GitError",
    "Hit",
    "HubMovedError",
    "IngestResult",
    "IntegrityError",
    "KbgitError",
    "KnowledgeStore",
    "LockedError",
    "QueryError",
    "QueryResult",
    "SentenceTransformerEmbedder",
    "Snapshot",
    "StoreConfig",
    "StoreStatus",
    "create_hub",
    "load_embedder",
]


def test_public_surface_is_pinned() -> None:
    assert sorted(kbgit.__all__) == EXPECTED_ALL


def test_public_import_paths_users_have_keep_working() -> None:
    from kbgit.langchain import KbgitEmbeddings, KbgitVectorStore
    from kbgit.retriever import KbgitHTTPRetriever

    assert KbgitVectorStore.__module__ == "kbgit.langchain.vectorstore"
    assert KbgitHTTPRetriever.__module__ == "kbgit.langchain.retriever"
    assert KbgitEmbeddings.__doc__


def test_all_names_exist_and_are_documented() -> None:
    for name in kbgit.__all__:
        obj = getattr(kbgit, name)
        assert obj.__doc__ and obj.__doc__.strip(), f"kbgit.{name} needs a docstring"


def test_every_error_derives_from_kbgit_error_and_has_a_hint_slot() -> None:
    errors = [getattr(kbgit, n) for n in kbgit.__all__ if n.endswith("Error")]
    assert len(errors) >= 8
    for err in errors:
        assert issubclass(err, kbgit.KbgitError)
        assert err("x", hint="do y").hint == "do y"


def test_library_does_not_import_cli_or_web_frameworks() -> None:
    import subprocess
    import sys

    code = (
        "import sys, kbgit, kbgit.store, kbgit.format.snapshot, kbgit.ingest.plan; "
        "print(','.join(m for m in ('click', 'flask') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_only_the_opt_in_langchain_import_module_imports_pickle() -> None:
    """A standby loads stores written by any pusher: nothing on that path may unpickle."""
    import re
    from pathlib import Path

    root = Path(kbgit.__file__).resolve().parent.parent
    importers = sorted(
        str(p.relative_to(root))
        for folder in ("kbgit", "server")
        for p in (root / folder).rglob("*.py")
        if re.search(r"^\s*(import pickle|from pickle import)", p.read_text(), re.M)
    )
    assert importers == ["kbgit/langchain/unpickler.py"]


def test_loading_and_serving_a_store_never_imports_the_unpickler() -> None:
    import subprocess
    import sys

    code = (
        "import sys, kbgit, kbgit.serving.service, kbgit.serving.follower, kbgit.hub.hooks, kbgit.format.verify, server, "
        "kbgit.cli; print('kbgit.langchain.unpickler' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
