"""HTTP and WebSocket routes, one router per noun."""
