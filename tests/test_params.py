"""Typed parameters: one source per default, the schema's checks at construction, and
the same defaults whether Snakemake or the corereg command reads the configuration."""

import copy
import dataclasses

import pytest
import yaml

from conftest import ENGINE, ROOT, engine_params
from corereg import config
from corereg.data.settings import SourceSettings, TotalSegSettings
from corereg.errors import CoreregError
from corereg.params import ContrastiveAugmentation, DatasetSettings, EngineParams


def test_engine_type_config_and_schema_name_the_same_keys():
    fields = [f.name for f in dataclasses.fields(EngineParams)]
    node = config.schema()["properties"]["engine"]
    assert set(fields) == set(node["properties"]) == set(node["required"]) == set(ENGINE)
    aug = [f.name for f in dataclasses.fields(ContrastiveAugmentation)]
    assert set(aug) == set(node["properties"]["cl_aug"]["properties"]) == set(ENGINE["cl_aug"])


def test_engine_type_choices_are_the_schema_enums():
    import typing

    node = config.schema()["properties"]["engine"]["properties"]
    hints = typing.get_type_hints(EngineParams)
    for f in dataclasses.fields(EngineParams):
        if typing.get_origin(hints[f.name]) is typing.Literal:
            assert list(typing.get_args(hints[f.name])) == node[f.name]["enum"], f.name
        elif "enum" in node[f.name]:
            raise AssertionError(f"{f.name}: an enum in the schema, not a Literal in the type")


def test_engine_params_are_typed_and_round_trip():
    p = engine_params()
    assert p.coupling_weights == (0.003, 0.03, 0.3) and isinstance(p.feat_channels, tuple)
    assert isinstance(p.cl_aug, ContrastiveAugmentation) and p.cl_aug.geometric
    assert p.optimizer_reset_every is None
    # integers given for real-valued keys become floats; the plain form is the config's
    q = engine_params(cl_weight=5, reg_fac_start=4)
    assert q.cl_weight == 5.0 and isinstance(q.cl_weight, float)
    assert EngineParams.from_mapping(p.to_dict()) == p
    assert p.to_dict() == {**ENGINE, "coupling_weights": [0.003, 0.03, 0.3]}
    assert p.replace(stages=0).stages == 0 and p.stages == ENGINE["stages"]


@pytest.mark.parametrize(
    "over,message",
    [
        ({"cl_weight": -5}, r"^engine\.cl_weight: -5 is less than the minimum of 0$"),
        ({"cl_views": "both"}, r"^engine\.cl_views: 'both' is not one of"),
        ({"cl_aug": {"shear": True}}, r"^engine\.cl_aug: unknown parameters \['shear'\]"),
        ({"stage": 3}, r"^engine: unknown parameters \['stage'\] of method kind 'engine'"),
    ],
)
def test_engine_params_refuse_a_bad_key_in_one_line(over, message):
    with pytest.raises(CoreregError, match=message) as e:
        engine_params(**over)
    assert "\n" not in str(e.value)


def test_engine_params_name_missing_keys():
    values = {k: v for k, v in ENGINE.items() if k not in ("cl_backward", "stages")}
    with pytest.raises(
        CoreregError, match=r"train job: missing engine keys \['stages', 'cl_backward'\]"
    ):
        EngineParams.from_mapping(values, "train job")


def test_dataset_settings_take_what_the_jobs_need():
    ds = yaml.safe_load((ROOT / "config.yaml").read_text())["datasets"]["abdomen"]
    s = DatasetSettings.from_mapping(ds)
    assert s.clamp_eval == (-0.4, 0.6) and s.sdlogj_band == tuple(ds["sdlogj_band"])
    assert s.eval_labels == tuple(ds["eval_labels"])
    assert DatasetSettings.from_mapping({}) == DatasetSettings()


def test_source_settings_defaults_and_checks():
    src = SourceSettings.of({"kind": "radchestct", "record": "123", "n_train_pairs": 3})
    assert (src.pair_rule, src.split, src.seed, src.api) == (
        "first_two",
        "seeded",
        0,
        "https://zenodo.org/api",
    )
    assert src.totalsegmentator == TotalSegSettings() and src.totalsegmentator.version == "1.5.7"
    assert SourceSettings.of(src) is src
    with pytest.raises(
        CoreregError, match=r"^datasets\.x\.source\.pair_rule: 'second' is not one of"
    ):
        SourceSettings.of({"kind": "radchestct", "pair_rule": "second"}, "datasets.x.source")
    with pytest.raises(
        CoreregError, match=r"^source\.totalsegmentator\.version: '3' is not one of"
    ):
        TotalSegSettings.of({"version": "3"})


def test_schema_descriptions_state_the_source_defaults():
    """The schema's descriptions quote the defaults of the source types (docs/configuration.md
    is generated from them)."""
    node = config.schema()["properties"]["datasets"]["additionalProperties"]["properties"]
    source = node["source"]["properties"]
    for settings, props in (
        (SourceSettings(kind="abdomenctct"), source),
        (TotalSegSettings(), source["totalsegmentator"]["properties"]),
    ):
        for f in dataclasses.fields(settings):
            value = getattr(settings, f.name)
            if f.name == "kind" or value in (None, ()) or dataclasses.is_dataclass(value):
                continue
            if isinstance(value, bool):  # as YAML writes it
                shown = str(value).lower()
            else:
                shown = f"{value:g}" if isinstance(value, float) else str(value)
            assert f"(unset: {shown})" in props[f.name]["description"], f.name


def test_defaults_are_filled_as_snakemake_fills_them():
    from snakemake.utils import validate

    cfg = config.load(ROOT / "config.yaml", [ROOT / "workflow" / "presets" / "demo.yaml"])
    del cfg["fields"]  # an absent optional block is filled too
    for m in cfg["methods"].values():
        for key in ("enabled", "env", "params", "variants"):
            m.pop(key, None)
    ours = config.with_defaults(cfg)
    theirs = copy.deepcopy(cfg)
    validate(theirs, str(config.SCHEMA))
    assert ours == theirs
    assert ours["fields"] == {"keep": "figures", "storage": "float32"}
    assert all(m["enabled"] is True and m["variants"] == {} for m in ours["methods"].values())
    assert config.with_defaults(ours) == ours  # idempotent
