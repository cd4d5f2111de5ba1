"""What runs on the hub: its receive hooks (verify on pre-receive, notify on post-receive)."""
