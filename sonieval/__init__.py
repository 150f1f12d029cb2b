"""sonieval: evaluation and listening-study toolkit for embedding sonification."""

__version__ = "0.1.0"
