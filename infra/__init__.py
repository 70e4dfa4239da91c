"""Shared infrastructure: event store, relay, reliable handling, db, logging, settings. No domain."""
