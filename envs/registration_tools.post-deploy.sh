#!/usr/bin/env bash
# Run by Snakemake inside the new registration_tools environment (--use-conda).
set -euo pipefail
CMAKE_POLICY_VERSION_MINIMUM=3.5 python -m pip install --no-deps niftyreg==1.5.70rc1
python -m pip install --no-deps --no-build-isolation --pre quantiphyse-deeds==0.8.dev9
