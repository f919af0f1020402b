"""The optimizer REST API (`autoopt serve`)."""
