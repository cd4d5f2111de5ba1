"""Upgrade a store to the current format as one forward commit (``kbgit migrate``).

Format 1 keeps every document in ``ledger.json``, rewritten whole on every commit;
format 2 splits it into a small root and ``ledger/<key>.json`` shards (kbgit/format/
shards.py). The migration commit rewrites the ledger and the manifest's ``format`` and
``ledger_sha256``; index segments and documents keep their bytes (same git blobs), so
a standby's caches stay warm and the push carries only the new ledger files. It goes
through the writer like every other commit, is verified before it is kept, and pushed.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from ..errors import QueryError
from ..format.checks import SegmentCache
from ..format.ledger import FORMAT_VERSION, LEDGER_PATH
from ..format.manifest import MANIFEST_PATH, sha256
from ..format.shards import encode_ledger
from ..format.trailers import Trailers

if TYPE_CHECKING:
    from ..store import KnowledgeStore

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class MigrateResult:
    """What ``kbgit migrate`` did: the formats before and after, and the new commit."""

    commit: str | None
    format_before: int
    format_after: int
    documents: int
    ledger_files: int
    pushed: bool
    dry_run: bool = False

    @property
    def noop(self) -> bool:
        """Tell whether the store was already in the current format."""
        return self.format_before == self.format_after


def migrate(
    store: KnowledgeStore, *, dry_run: bool = False, push: bool = True, wait: bool = True
) -> MigrateResult:
    """Rewrite HEAD's ledger and manifest in the current format as one verified commit."""
    with store.writer.transaction(wait=wait) as txn:
        ledger, manifest = txn.ledger, txn.manifest
        if ledger is None or manifest is None:
            raise QueryError(f"{store.root} has no commits to migrate")
        files = encode_ledger(dataclasses.replace(ledger, format=FORMAT_VERSION), None)
        result = MigrateResult(
            None, ledger.format, FORMAT_VERSION, len(ledger.documents), len(files.writes), False
        )
        if ledger.format >= FORMAT_VERSION:
            return dataclasses.replace(result, format_after=ledger.format)
        if dry_run:
            return dataclasses.replace(result, dry_run=True)
        new_manifest = dataclasses.replace(
            manifest, format=FORMAT_VERSION, ledger_sha256=sha256(files.root)
        )
        for path, data in files.writes.items():
            txn.write(path, data)
        txn.write(MANIFEST_PATH, new_manifest.to_bytes())
        commit = txn.commit(*_describe(result, manifest.live_vectors, manifest.generation),
                            verify=SegmentCache())  # fmt: skip
        logger.info("migrated %s to format %d as %s", store.root, FORMAT_VERSION, commit[:12])
        pushed = txn.push() if push else False
        return dataclasses.replace(result, commit=commit, pushed=pushed)


def _describe(result: MigrateResult, vectors: int, generation: int) -> tuple[str, list, Trailers]:
    subject = f"kbgit migrate: format {result.format_before} -> {result.format_after}"
    body = [
        f"{LEDGER_PATH} is now a small root; the {result.documents} document entries moved",
        f"to {result.ledger_files - 1} ledger/ shards. Index files and documents are unchanged.",
        "Standbys running a release that reads only format 1 refuse this commit and keep",
        "serving the previous one until they are upgraded.",
    ]
    trailers = Trailers(
        vectors=vectors,
        generation=generation,
        operation="migrate",
        extra=(("Format", str(result.format_after)),),
    )
    return subject, body, trailers
