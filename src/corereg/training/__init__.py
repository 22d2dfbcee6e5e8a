"""Cyclical self-training of the registration engine (Bigalke et al.; CoRe)."""
