"""uniGradICON (Tian et al., MICCAI 2024): the released foundation model, no training here.

The packages ``unigradicon`` 1.0.6 and ``icon_registration`` 1.1.9 (installed with
``--no-deps``) provide the network (``unigradicon.make_network``), the CT
preprocessing (``unigradicon.preprocess``: clamp to ``ct_window``, scale to [0, 1])
and ``icon_registration.itk_wrapper.register_pair`` (resampling to the network's
input shape, ``io_iterations`` steps of instance optimisation, ITK transforms out).
The weights file is a config path (``params.weights``; the workflow downloads the
released file when it is null), never looked up relative to the working directory.

Field conversion: both images are ITK images on the fixed grid with unit
spacing, identity direction and zero origin (fixed and moving share that grid in
this pipeline, so the physical frame only has to be consistent).  ``phi_AB`` maps a
fixed-space point to the moving-space point that ITK's resampler samples;
``TransformToDisplacementFieldFilter`` evaluates it on the fixed grid, and dividing
the physical displacement by the spacing gives the Learn2Reg voxel field (tested
against ITK's own nearest-neighbour resampling of the moving labels).

Array axes: our volumes are (a0, a1, a2); they are handed to ITK transposed so that
ITK's index (i, j, k) is (a0, a1, a2) and the spacing keeps our order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from corereg.errors import CoreregError, InputError, ToolMissing
from corereg.registration.methods import Method

INSTALL = (
    "pip install itk==5.4.7 && pip install --no-deps unigradicon==1.0.6 icon_registration==1.1.9 "
    "(make does this)"
)


# The images' physical frame only has to be the same for both images and the field
# conversion (register_pair resamples arrays to the network's shape whatever the
# spacing), so unit spacing is used.
UNIT = (1.0, 1.0, 1.0)


def packages():
    try:
        import icon_registration
        import icon_registration.itk_wrapper
        import itk
        import unigradicon
    except ImportError as exc:
        raise ToolMissing(
            "unigradicon", f"uniGradICON is not importable ({exc}); {INSTALL}"
        ) from exc
    return unigradicon, icon_registration, itk


def to_itk(volume: np.ndarray, spacing):
    _, _, itk = packages()
    image = itk.image_from_array(
        np.ascontiguousarray(np.asarray(volume, dtype=np.float32).transpose(2, 1, 0))
    )
    image.SetSpacing([float(s) for s in spacing])
    return image


def from_itk(image) -> np.ndarray:
    _, _, itk = packages()
    return np.asarray(itk.array_from_image(image)).transpose(2, 1, 0)


def dense_field(transform, reference) -> np.ndarray:
    """Learn2Reg (H, W, D, 3) voxel field of an ITK transform on ``reference``'s grid."""
    _, _, itk = packages()
    vec = itk.Vector[itk.F, 3]
    flt = itk.TransformToDisplacementFieldFilter[itk.Image[vec, 3], itk.D].New()
    flt.SetTransform(transform)
    flt.SetReferenceImage(reference)
    flt.SetUseReferenceImage(True)
    flt.Update()
    phys = np.asarray(
        itk.array_from_image(flt.GetOutput())
    )  # (a2, a1, a0, 3), (i, j, k) components
    spacing = np.asarray(reference.GetSpacing(), dtype=np.float64)
    return (phys.transpose(2, 1, 0, 3) / spacing).astype(np.float32)


def random_weights(path, input_shape, scale: float = 0.02, seed: int = 0) -> Path:
    """A random network saved like the released file (tests, smoke runs).  The package
    initialises its output layers to zero (an identity map); ``scale`` adds Gaussian noise
    to every weight so that the random network produces a non-trivial field."""
    unigradicon, icon, _ = packages()
    torch.manual_seed(seed)
    net = unigradicon.make_network(
        [1, 1, *input_shape], include_last_step=True, loss_fn=icon.LNCC(sigma=5)
    )
    with torch.no_grad():
        for prm in net.regis_net.parameters():
            prm.add_(torch.randn_like(prm) * scale)
    torch.save(net.regis_net.state_dict(), path)
    return Path(path)


class UniGradICON(Method):
    kind = "unigradicon"

    def __init__(self, params, device, checkpoint=None, seed=0):
        super().__init__(params, device, checkpoint, seed)
        self.resolve_params()
        unigradicon, icon, _ = packages()
        weights = self.params["weights"]
        if not weights:
            raise CoreregError(
                "unigradicon: params.weights (the released Step_2_final.trch) is not set"
            )
        if not Path(weights).is_file():
            raise InputError(weights, "uniGradICON weights file does not exist")
        from corereg import not_run

        reason = not_run.reason_of_record(weights)
        if reason:
            raise ToolMissing("unigradicon", reason)
        shape = [int(n) for n in self.params["input_shape"]]
        import icon_registration.config

        icon_registration.config.device = device  # the package reads its device from here
        self.net = unigradicon.make_network(
            [1, 1, *shape], include_last_step=True, loss_fn=icon.LNCC(sigma=5)
        )
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            self.net.regis_net.load_state_dict(state)
        except Exception as exc:  # a truncated download or another model's file
            raise InputError(
                weights, f"not a uniGradICON weights file for input shape {shape} ({exc})"
            ) from exc
        self.net.to(device).eval()
        self.transform = None  # the last ITK transform (tests compare against ITK's own warp)

    def register(self, fixed, moving):
        unigradicon, _, _ = packages()
        from icon_registration import itk_wrapper

        spacing = UNIT
        window = tuple(float(v) for v in self.params["ct_window"])
        img_f, img_m = to_itk(fixed, spacing), to_itk(moving, spacing)
        pre_f = unigradicon.preprocess(img_f, "ct", ct_window=window)
        pre_m = unigradicon.preprocess(img_m, "ct", ct_window=window)
        steps = int(self.params["io_iterations"]) or None  # 0: the network alone
        phi_ab, _ = itk_wrapper.register_pair(
            self.net,
            pre_m,
            pre_f,
            finetune_steps=steps,
            learning_rate=float(self.params["io_lr"]),
        )
        self.transform = phi_ab
        return dense_field(phi_ab, img_f)

    def own_warp(self, moving_labels: np.ndarray, spacing=None) -> np.ndarray:
        """ITK's nearest-neighbour resampling of ``moving_labels`` with the last transform."""
        _, _, itk = packages()
        img = to_itk(moving_labels, spacing or UNIT)
        interp = itk.NearestNeighborInterpolateImageFunction.New(img)
        out = itk.resample_image_filter(
            img,
            transform=self.transform,
            interpolator=interp,
            use_reference_image=True,
            reference_image=img,
            default_pixel_value=0,
        )
        return from_itk(out)
