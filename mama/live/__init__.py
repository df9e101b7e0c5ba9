"""Watching cameras: sources, the scoring loop, anomaly maps drawn, events and where they go
(`mama score`), and several cameras with a page and an API (`mama serve`)."""
