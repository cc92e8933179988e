"""What the test suites share: real servers (redis-server, uvicorn, LightRAG), their clients,
the service's test settings, and the one wait primitive (waiting.wait_until)."""
