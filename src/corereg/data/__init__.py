"""Datasets: manifests, synthetic phantoms, and (later) real-data acquisition."""
