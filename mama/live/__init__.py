"""Watching a camera: sources, the scoring loop, anomaly maps drawn, events and where they go
(`mama score`)."""
