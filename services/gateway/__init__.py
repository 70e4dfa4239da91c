"""Gateway: the only door from the internet. HTTP API and pages; commands and queries over RPC."""
