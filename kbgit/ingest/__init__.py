"""From a folder of documents to a commit: loaders, chunking, the change plan, the ingest."""
