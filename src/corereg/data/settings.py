"""Typed settings of a dataset's ``source`` (docs/configuration.md, ``datasets``).

The schema checks each key's type and range; the defaults of the keys a source may
leave out are the field defaults below (the network ones are the downloader's), and
the schema's descriptions state the same values.  The steps of a dataset (download,
convert, label, prepare) build these once from their job spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from corereg.data.sources import BACKOFF_S, RETRIES, TIMEOUT_S, ZENODO_API
from corereg.errors import CoreregError
from corereg.params import build


@dataclass(frozen=True)
class TotalSegSettings:
    """``source.totalsegmentator``: how RAD-ChestCT scans are labelled."""

    version: Literal["1.5.7", "2.18.0"] = "1.5.7"
    licence_env: str = "TOTALSEG_LICENSE"  # environment variable with the 2.x licence
    device: Literal["gpu", "cpu"] = "gpu"
    precomputed: str | None = None  # folder of existing <scan>_ts.nii.gz outputs

    @classmethod
    def of(cls, cfg, where: str = "source") -> TotalSegSettings:
        """``cfg`` (``source.totalsegmentator`` of a configuration) checked and typed."""
        if isinstance(cfg, cls):
            return cfg
        return SourceSettings.of(
            {"kind": "radchestct", "totalsegmentator": cfg}, where
        ).totalsegmentator


@dataclass(frozen=True)
class SourceSettings:
    """Where a dataset's scans come from; each kind reads its own keys."""

    kind: str  # a name of corereg.adapters.SOURCE_KINDS (the plan checks it)
    # synthetic phantoms (and the RAD-ChestCT patient split)
    seed: int = 0
    n_train: int | None = None
    n_test: int | None = None
    n_train_pairs: int | None = None
    n_test_pairs: int | None = None
    noise_hu: float = 12.0
    # Learn2Reg tasks (learn2reg, abdomenctct)
    task: str | None = None  # the task's name (<task>_dataset.json); unset: the one found
    path: str | None = None  # a local task folder instead of an archive
    test_pairs: str = "registration_val"  # the dataset json's key of the test pairs
    label_folder: Literal["labelsTr", "masksTr"] = "labelsTr"
    url: str | None = None
    md5: str | None = None
    size: int | None = None
    train: tuple[int, ...] = ()
    test: tuple[int, ...] = ()
    val: tuple[int, ...] = ()
    # a folder of one's own scans (folder; path above)
    images: str | None = None  # file pattern with {id}
    labels: str | None = None
    keypoints: str | None = None
    pairing: Literal["all", "consecutive", "list"] = "all"
    pairs_csv: str | None = None
    test_ids: tuple[str, ...] = ()
    val_ids: tuple[str, ...] = ()
    resample: bool = True
    # RAD-ChestCT
    record: str | None = None
    api: str = ZENODO_API
    token_env: str | None = None
    n_pairs: int | None = None
    pair_rule: Literal["first_two", "consecutive", "all"] = "first_two"
    split: Literal["seeded", "prefix_v2"] = "seeded"
    totalsegmentator: TotalSegSettings = field(default_factory=TotalSegSettings)
    # downloads
    timeout: float = TIMEOUT_S
    retries: int = RETRIES
    backoff: float = BACKOFF_S

    @classmethod
    def of(cls, source, where: str = "source") -> SourceSettings:
        """``source`` as settings: a configuration mapping is checked against the schema
        (one CoreregError names the first bad key as ``<where>.<key>``) and typed."""
        if isinstance(source, cls):
            return source
        _check(dict(source or {}), where)
        return build(cls, {k: v for k, v in source.items() if v is not None})

    def network(self) -> dict:
        """The download keywords (timeout, retries, backoff)."""
        return {"timeout": self.timeout, "retries": self.retries, "backoff": self.backoff}


def _check(values: dict, where: str) -> None:
    from corereg.config import node_error, schema

    node = schema()["properties"]["datasets"]["additionalProperties"]["properties"]["source"]
    e = node_error(node, values)
    if e is not None:
        raise CoreregError(f"{'.'.join([where, *map(str, e.path)])}: {e.message}")


__all__ = ["SourceSettings", "TotalSegSettings"]
