"""The three extension points of the pipeline, one registry each.

- **method kinds** (``methods.<name>.kind``): how a registration method is checked,
  trained, registered, costed and described (:class:`~corereg.adapters.base.MethodKind`);
- **dataset source kinds** (``datasets.<name>.source.kind``): the steps that turn a
  source into a prepared dataset and the counts it contributes
  (:class:`~corereg.adapters.base.SourceKind`);
- **artifact types** (``artifacts.<name>.type``): which runs an output reads, the spec
  its job gets and the files it writes (:class:`~corereg.adapters.base.ArtifactType`).

Each registry maps a name to ``"module:Class"``; the class is imported on first use,
so that a kind's packages are needed only by its own jobs.  Adding a kind is one
module with one adapter class and one line in the registry below (docs/architecture.md).
"""

from __future__ import annotations

from corereg.adapters.base import Registry

METHOD_KINDS = Registry(
    "method kind",
    {
        "initial": "corereg.adapters.method_kinds:InitialKind",
        "convexadam": "corereg.adapters.method_kinds:ConvexAdamKind",
        "deeds": "corereg.adapters.method_kinds:DeedsKind",
        "niftyreg": "corereg.adapters.method_kinds:NiftyRegKind",
        "voxelmorph": "corereg.adapters.method_kinds:VoxelMorphKind",
        "lapirn": "corereg.adapters.method_kinds:LapIRNKind",
        "unigradicon": "corereg.adapters.method_kinds:UniGradICONKind",
        "samconvex": "corereg.adapters.method_kinds:SAMConvexKind",
        "engine": "corereg.adapters.method_kinds:EngineKind",
    },
)

SOURCE_KINDS = Registry(
    "dataset source kind",
    {
        "abdomenctct": "corereg.adapters.source_kinds:AbdomenCTCT",
        "learn2reg": "corereg.adapters.source_kinds:Learn2Reg",
        "folder": "corereg.adapters.source_kinds:Folder",
        "radchestct": "corereg.adapters.source_kinds:RadChestCT",
        "synthetic_abdomen": "corereg.adapters.source_kinds:SyntheticAbdomen",
        "synthetic_chest": "corereg.adapters.source_kinds:SyntheticChest",
    },
)

ARTIFACT_TYPES = Registry(
    "artifact type",
    {
        "table": "corereg.adapters.artifact_types:Table",
        "qualitative": "corereg.adapters.artifact_types:Qualitative",
        "weight_curve": "corereg.adapters.artifact_types:WeightCurve",
        "training_curves": "corereg.adapters.artifact_types:TrainingCurves",
    },
)


def make_method(kind: str, params: dict, device, checkpoint=None, seed: int = 0, dataset=None):
    """A registration method of ``kind`` ready to register (see :meth:`MethodKind.make`)."""
    return METHOD_KINDS[kind].make(params, device, checkpoint, seed, dataset)


__all__ = ["ARTIFACT_TYPES", "METHOD_KINDS", "SOURCE_KINDS", "make_method"]
