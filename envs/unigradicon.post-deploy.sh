#!/usr/bin/env bash
# Run by Snakemake inside the new unigradicon environment (--use-conda).
set -euo pipefail
python -m pip install --no-deps unigradicon==1.0.6 icon_registration==1.1.9
