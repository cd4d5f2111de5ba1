"""From commits to commits: log/diff/show, rollback and tags, compaction and gc."""
