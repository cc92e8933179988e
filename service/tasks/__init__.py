"""The task domain: the task format, the queue protocol, the worker, its leases and handlers."""
