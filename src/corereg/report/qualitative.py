"""Figure 3 from a spec: loads one test pair per dataset and each method's field."""

from __future__ import annotations

from pathlib import Path

from corereg.data.manifest import field_name, load_manifest
from corereg.evaluation import warp_labels
from corereg.io import load_field
from corereg.report.figures import fig3

# the HU display window of a dataset that sets no ``window``
SOFT_TISSUE_WINDOW = (-200, 300)


def fig3_from_spec(spec: dict, out_prefix) -> None:
    """``spec['panels']``: per dataset the prepared folder, pair index, window and
    ``methods``: list of {label, fields} (fields: a run's field folder, or null if not run)."""
    panels = []
    for ds in spec["panels"]:
        m = load_manifest(ds["data"])
        pair = m.pairs("test")[ds["pair_index"]]
        fixed, _ = m.load_image(pair["fixed"])
        moving, _ = m.load_image(pair["moving"])
        fl, ml = m.load_labels(pair["fixed"]), m.load_labels(pair["moving"])
        methods = []
        for meth in ds["methods"]:
            path = meth.get("fields")
            if path and (Path(path) / field_name(pair["fixed"], pair["moving"])).is_file():
                disp = load_field(Path(path) / field_name(pair["fixed"], pair["moving"]), m.shape)
                methods.append((meth["label"], warp_labels(ml, disp)))
            else:
                methods.append((meth["label"], None))
        # Slices through the centre of the labelled region.
        import numpy as np

        c = np.argwhere(fl > 0).mean(0).astype(int) if (fl > 0).any() else np.array(fl.shape) // 2
        panels.append(
            {
                "display": f"{ds['display']} ({pair['fixed']} ← {pair['moving']})",
                "fixed": fixed,
                "moving": moving,
                "fixed_lab": fl,
                "moving_lab": ml,
                "window": ds["window"] or SOFT_TISSUE_WINDOW,
                "n_labels": max(m.labels),
                "methods": methods,
                "spacing": m.spacing,
                "slices": {"axial": int(c[2]), "coronal": int(c[1])},
            }
        )
    fig3(panels, out_prefix)
