"""MONAI dictionary transform chains (key ``"image"``): the deterministic part that is cached.

Order: load the ingested NIfTI, channel first, orientation RAS, optional resampling, intensity by
modality, 2D view (squeeze a 2D scan, or slice a 3D one), resize the longest side, then pad or crop
to the model input. Axes after orientation are (R, A, S); a 3D model sees (S, A, R)-ordered
``(C, D, H, W)`` input: depth is the axial (S) axis.
"""

from __future__ import annotations

import json
import logging
import warnings
from functools import lru_cache
from typing import Any, Hashable, Mapping

import numpy as np
import torch
from monai.transforms import (
    Compose, EnsureChannelFirstd, EnsureTyped, LoadImaged, MapTransform, Orientationd, ResizeWithPadOrCropd,
    Resized, ScaleIntensityd, ScaleIntensityRanged, ScaleIntensityRangePercentilesd, Spacingd, Transposed,
)

KEY = "image"


class To2DViewd(MapTransform):
    """Turn a channel-first (C, R, A, S) volume into a 2D (C', R, A) image.

    A 2D scan (one axis of length 1) is squeezed; a 3D scan is sliced: ``centre`` takes the middle
    axial slice, ``mip`` the maximum over S, ``2.5d`` the middle three axial slices as channels.

    >>> out = To2DViewd("image", "2.5d")({"image": torch.arange(2 * 2 * 5.).reshape(1, 2, 2, 5)})
    >>> tuple(out["image"].shape), out["image"][:, 0, 0].tolist()
    ((3, 2, 2), [1.0, 2.0, 3.0])
    """

    def __init__(self, keys: str, strategy: str, channels_for_2d: int = 1) -> None:
        super().__init__(keys)
        self.strategy = strategy
        self.channels_for_2d = channels_for_2d

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = torch.as_tensor(d[key])
            spatial = image.shape[1:]
            if 1 in spatial:  # a 2D scan: drop its singleton axis
                view = image.squeeze(1 + list(spatial).index(1))
                d[key] = view.repeat(self.channels_for_2d, 1, 1) if self.channels_for_2d > 1 else view
                continue
            depth = image.shape[-1]
            middle = depth // 2
            if self.strategy == "centre":
                d[key] = image[..., middle]
            elif self.strategy == "mip":
                d[key] = image.amax(dim=-1)
            else:
                picks = [max(0, middle - 1), middle, min(depth - 1, middle + 1)]
                d[key] = image[0][..., picks].permute(2, 0, 1)
        return d


def _intensity(params: dict[str, Any]) -> Any:
    mode = params["intensity"]
    if mode == "ct_window":
        centre, width = params["window"]
        return ScaleIntensityRanged(KEY, a_min=centre - width / 2, a_max=centre + width / 2, b_min=0.0, b_max=1.0, clip=True)
    if mode == "percentile":
        lower, upper = params["percentiles"]
        return ScaleIntensityRangePercentilesd(KEY, lower=lower, upper=upper, b_min=0.0, b_max=1.0, clip=True)
    return ScaleIntensityd(KEY, minv=0.0, maxv=1.0)


@lru_cache(maxsize=32)
def _chain(params_json: str) -> Compose:
    # LoadImaged builds every MONAI reader, and the pydicom/nvImageCodec one complains on machines
    # without nvImageCodec. ScanLens reads NIfTI here only, so that complaint is noise.
    logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
        return _build(json.loads(params_json))


def deterministic_transforms(params: dict[str, Any]) -> Compose:
    """The cached chain for one scan, from :meth:`PreprocessConfig.effective` parameters (memoised)."""
    return _chain(json.dumps(params, sort_keys=True))


def _build(params: dict[str, Any]) -> Compose:
    steps: list[Any] = [
        LoadImaged(KEY, reader="NibabelReader", image_only=True),
        EnsureChannelFirstd(KEY, channel_dim="no_channel"),
        Orientationd(KEY, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
    ]
    if params["spacing"]:
        steps.append(Spacingd(KEY, pixdim=params["spacing"], mode="bilinear"))
    steps.append(_intensity(params))
    size = tuple(params["input_size"])
    if params["dims"] == 2:
        steps.append(To2DViewd(KEY, params.get("slice_strategy", "centre"), params.get("channels", 1)))
    else:
        steps.append(Transposed(KEY, indices=(0, 3, 2, 1)))  # (C, R, A, S) -> (C, S, A, R) = (C, D, H, W)
    steps += [
        Resized(KEY, spatial_size=max(size), size_mode="longest", mode="area"),
        ResizeWithPadOrCropd(KEY, spatial_size=size),
        EnsureTyped(KEY, data_type="numpy", dtype=np.float32, track_meta=False),
    ]
    return Compose(steps)
