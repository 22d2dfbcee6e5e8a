"""Sentences of the claims page that describe a run (no heavy imports: the workflow's
plan writes them into the claims step's spec)."""

from __future__ import annotations


def run_scale(seeds: int, iterations: int, synthetic: bool) -> str:
    """How big this run is next to the paper's, and what synthetic data mean for verdicts."""
    return (
        f"This run: {seeds} seed(s), {iterations} training iterations of the "
        "engine (the paper: 8000)"
        + (
            ", synthetic phantoms instead of CT: verdicts say what "
            "the pipeline's numbers show at this scale, not whether the paper's CT result holds"
            if synthetic
            else ""
        )
        + "."
    )
