"""The platform's services; each runs as its own process and never imports another's package."""
