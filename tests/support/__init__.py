"""Real servers and clients the test suites share: redis-server, uvicorn, SSE and WS readers."""
