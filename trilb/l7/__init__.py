"""Layer 7 proxying: HTTP/1.1 parsing, routing (and later the proxy, HTTP/2, WebSocket)."""
