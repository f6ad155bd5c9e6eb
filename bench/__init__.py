"""anobench: which synthetic-anomaly generator trains the best detector, and at what cost."""

__version__ = "0.1.0"

from anobench.errors import AnobenchError  # noqa: E402

__all__ = ["AnobenchError", "__version__"]
