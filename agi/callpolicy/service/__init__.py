"""The daemon's wiring: serve, watchdog, metrics and status, config, logging set-up."""
