"""Typed parameters, built once from the checked configuration.

Jobs receive their settings as JSON; the code that uses them reads attributes of the
types below, never ``.get(key, default)`` on a configuration mapping.  Each value has
one source:

- the engine's constants: the ``engine`` block of ``config.yaml`` (complete there;
  methods and variants override keys of it), checked against the schema's ``engine``
  node, which holds the types and ranges;
- a dataset's test-time settings: its ``datasets.<name>`` entry, whose optional keys
  mean "not set" (``None``).

:meth:`EngineParams.from_mapping` refuses an unknown, missing or out-of-range key
with one line naming it and where it came from.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass
from typing import Literal

from corereg.errors import CoreregError


@dataclass(frozen=True)
class ContrastiveAugmentation:
    """The transformations between the two views of the contrastive loss (``cl_aug``)."""

    geometric: bool  # T_g: a random affine
    intensity: bool  # T_i: a random monotone intensity curve
    deformable: bool  # the code's deformable view instead of the affine (needs geometric off)


@dataclass(frozen=True)
class EngineParams:
    """The constants of the CoRe / Bigalke et al. engine (docs/configuration.md, ``engine``)."""

    # -- training schedule
    contrastive: bool
    stages: int
    iters_per_stage: int
    batch_size: int
    lr_max: float
    lr_min: float
    lr_schedule: Literal["cosine_warm_restarts", "cosine"]
    optimizer_reset_every: int | None
    amp: bool
    # -- network
    feat_channels: tuple[int, ...]
    feat_strides: tuple[int, ...]
    proj_channels: tuple[int, ...]
    cl_feature_layer: Literal["conv4_pre_bn", "post_relu_proj"]
    # -- coupled convex optimisation
    disp_hw: int
    feat_scale: float
    cost: Literal["sad", "correlation"]
    softargmin_beta: float
    coupling_weights: tuple[float, ...]
    ice: bool
    ice_iters: int
    num_warps: Literal[1, 2]
    compose_order: Literal["code", "exact"]
    # -- Adam instance optimisation
    adam_iters: int
    adam_lr: float
    adam_grid_sp: int
    adam_lambda: float
    reg_fac_train: float
    reg_fac_val: float
    adam_feat: Literal["random_projection", "mind"]
    adam_cost_scale: float
    adam_impl: Literal["auto", "fused", "grid_sample"]
    # -- pseudo-labels, registration loss, augmentation
    use_adam_for_labels: bool
    difficulty_sampling: bool
    reg_loss: Literal["epe", "mse"]
    aug_strength_reg: float
    aug_strength_cl: float
    aug_label_composition: Literal["code", "exact"]
    pad_value_aug: Literal["minimum", "zero"]
    # -- contrastive term
    cl_weight: float
    cl_weight_schedule: Literal["linear_decay", "constant"]
    cl_num_samples: int
    cl_temperature: float
    cl_normalize: bool
    cl_negatives: Literal["view_b_batch", "both_views"]
    cl_reduction: Literal["mean", "sum"]
    cl_pretrain_iters: int
    cl_fg_threshold: float
    cl_border: int
    cl_sampling_variant: Literal["fixed", "paper_era"]
    cl_views: Literal["separate", "listing1"]
    cl_view_b_grad: bool
    cl_backward: Literal["split", "joint"]
    cl_aug: ContrastiveAugmentation
    contrastive_mode: Literal["joint", "pretrain_frozen"]
    ema: bool
    ema_decay: float
    # -- inputs, validation, test time
    hu_scale: float
    label_crop_border: int
    val_every: int
    val_pairs: int
    test_adam: bool
    reg_fac_search: bool
    reg_fac_start: float
    reg_fac_step: float
    reg_fac_max_rounds: int
    bn_quirk: bool

    @classmethod
    def from_mapping(cls, values: typing.Mapping, where: str = "engine") -> EngineParams:
        """The engine constants of ``values`` (every key of the ``engine`` block), checked
        against the schema: one CoreregError names the first bad key as ``<where>.<key>``."""
        from corereg.config import check_method_params

        check_method_params("engine", dict(values), where)
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in values]
        if missing:
            raise CoreregError(
                f"{where}: missing engine keys {missing} (config.yaml's engine block has them all)"
            )
        return build(cls, values)

    def to_dict(self) -> dict:
        """Plain JSON-able values (tuples as lists), e.g. for a checkpoint or a job spec."""
        return _plain(dataclasses.asdict(self))

    def replace(self, **changes) -> EngineParams:
        """A copy with ``changes`` applied and checked like the configuration."""
        return type(self).from_mapping({**self.to_dict(), **changes}, "engine")

    @property
    def joint_contrastive(self) -> bool:
        """The contrastive term is trained together with the registration loss."""
        return self.contrastive and self.contrastive_mode == "joint"


ENGINE_KEYS = frozenset(f.name for f in dataclasses.fields(EngineParams))


@dataclass(frozen=True)
class DatasetSettings:
    """What a training or registration job needs from ``datasets.<name>``."""

    eval_labels: tuple[int, ...] | None = None  # None: every label of the manifest
    clamp_train: tuple[float, float] | None = None  # network input clamp while training
    clamp_eval: tuple[float, float] | None = None  # ... at validation and test time
    sdlogj_band: tuple[float, float] | None = None  # target of the test-time reg_fac search

    @classmethod
    def from_mapping(cls, values: typing.Mapping | None) -> DatasetSettings:
        """The settings above out of a dataset's configuration entry (other keys ignored)."""
        values = values or {}
        known = {f.name for f in dataclasses.fields(cls)}
        return build(cls, {k: v for k, v in values.items() if k in known and v is not None})


# ----------------------------------------------------------------------------- building
@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def build(cls, values: typing.Mapping):
    """An instance of dataclass ``cls`` from ``values`` (already checked against the
    schema), each value converted to its field's type; absent keys take the field default."""
    hints = _hints(cls)
    return cls(
        **{
            f.name: _convert(hints[f.name], values[f.name])
            for f in dataclasses.fields(cls)
            if f.name in values
        }
    )


def _convert(tp, value):
    """``value`` as type ``tp`` (the schema has checked it already): lists become tuples,
    integers given for floats become floats, nested mappings become their dataclass."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(inner, value)
    if origin is tuple:
        args = typing.get_args(tp)
        inner = args[0]
        return tuple(_convert(inner, v) for v in value)
    if origin is Literal:
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value)
    if tp is float:
        return float(value)
    if tp is int:
        return int(value)
    return value


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


__all__ = ["ENGINE_KEYS", "ContrastiveAugmentation", "DatasetSettings", "EngineParams"]
