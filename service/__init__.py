"""Shield orchestrator: a durable task queue and an event bus on Redis Streams."""
