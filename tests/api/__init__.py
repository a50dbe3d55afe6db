"""The HTTP API, its clients (Node.js) and the pages it serves."""
