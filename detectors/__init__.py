"""Anomaly detectors trained on generated data (``anobench.detectors``)."""
