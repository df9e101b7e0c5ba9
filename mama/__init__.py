"""mama: video anomaly detection after "Making Anomalies More Anomalous" (F2LM generator +
Destroyer), with custom C++/Triton ops. See README.md and docs/design.md."""

__version__ = "0.1.0"
