"""From a commit to answers: the query service, the follower (sync daemon), failover, nginx."""
