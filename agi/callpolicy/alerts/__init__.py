"""Alerts to the on-call engineer (README: Alerts): kinds and payloads (kinds), the
`[alerts]` config (config), aggregation and state tracking (aggregate), what raises them
(sources), the persistent outbox (outbox), webhook / e-mail senders (senders, signature),
delivery with back-off (delivery), and the daemon's Alerter that ties them (alerter).

Nothing is imported here: service/config.py imports alerts.config alone, the fallback AGI
alerts.fallback_journal alone."""
