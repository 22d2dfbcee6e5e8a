"""corereg: the reproduction pipeline for CoRe (Kats et al.) and its baselines."""

__version__ = "0.1.0"
