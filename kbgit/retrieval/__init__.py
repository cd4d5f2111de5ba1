"""Retrieval above the stored format: lexical BM25 per segment, query modes, evals.

Sits above kbgit/format/ (it reads verified snapshots) and below the store facade, the
serving layer and the hub hooks, which call it; format/ never imports it.
"""
