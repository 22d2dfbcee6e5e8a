"""AbdomenCTCT (Learn2Reg release): the paper's abdomen dataset, a Learn2Reg task.

Source kind ``abdomenctct`` is ``learn2reg`` with ``task: AbdomenCTCT``
(:mod:`corereg.data.learn2reg`).  The images are already 2 mm, 192×160×256, so
"conversion" is a check of shape and spacing against the configuration.  The paper's
split (the Learn2Reg validation set is its test set): test scans 1, 4, …, 28 → 45 pairs,
the other 20 scans → 190 training pairs, fixed = lower id; ``val`` ids (a subset of the
training scans, as in the authors' code) give the in-training validation pairs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from corereg.data import learn2reg
from corereg.data.learn2reg import unpack
from corereg.data.manifest import ABDOMEN_LABELS
from corereg.data.settings import SourceSettings

NAME = "AbdomenCTCT"
DEFAULT_LABELS = ABDOMEN_LABELS  # used when the dataset json has no label block


def _task(source, dataset: str) -> SourceSettings:
    source = SourceSettings.of(source, f"datasets.{dataset}.source")
    return dataclasses.replace(source, task=source.task or NAME)


def fetch(source, out, log=print, dataset: str = "abdomen") -> Path:
    """Download the archive (verified; checksum pinned or locked) and unpack it into ``out``."""
    return learn2reg.fetch(_task(source, dataset), out, log, dataset)


def find_root(raw: Path) -> Path:
    return learn2reg.find_root(raw, NAME)


def prepare(raw, out, dataset: str, spec: dict, log=print) -> Path:
    """Check every scan of the split against the configuration and write the manifest."""
    return learn2reg.prepare(
        raw, out, dataset, {**spec, "source": _task(spec["source"], dataset)}, log
    )


__all__ = ["DEFAULT_LABELS", "NAME", "fetch", "find_root", "prepare", "unpack"]
