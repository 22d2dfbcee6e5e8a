"""Every registration method kind and the class that runs it.

The ``kind`` of a method in the configuration names one entry; the class is
imported when a method of that kind is made, so that a tool family's packages are
needed only by its own jobs.  A new method is one entry here and one class with
``register(fixed, moving) -> field``.
"""

from __future__ import annotations

import importlib

KINDS: dict[str, str] = {
    "initial": "corereg.registration.methods:Initial",
    "convexadam": "corereg.registration.methods:ConvexAdam",
    "engine": "corereg.registration.engine_method:Engine",
    "niftyreg": "corereg.baselines.niftyreg:NiftyReg",
    "deeds": "corereg.baselines.deeds:Deeds",
    "voxelmorph": "corereg.baselines.learned:VoxelMorph",
    "lapirn": "corereg.baselines.learned:LapIRNMethod",
    "unigradicon": "corereg.baselines.unigradicon:UniGradICON",
}

# Kinds the configuration accepts that have no adapter in this version, and why.
WITHOUT_ADAPTER: dict[str, str] = {
    "samconvex": "SAMConvex has no adapter; its rows read 'not run' with the reason",
}


def method_class(kind: str):
    """The class registered for ``kind`` (KeyError if there is none)."""
    module, name = KINDS[kind].split(":")
    return getattr(importlib.import_module(module), name)
