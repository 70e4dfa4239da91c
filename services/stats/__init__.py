"""Stats: province-wide figures for the health bureau, projected from the event store's global order."""
