"""What a commit is: ledger, manifest, segments (vector index), snapshot loading, verification.

Knows nothing of ingesting, history, serving or LangChain.
"""
