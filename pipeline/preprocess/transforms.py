"""MONAI dictionary transform chains (key ``"image"``): the deterministic part that is cached.

Order: load the ingested NIfTI, channel first, orientation RAS, optional resampling, intensity by
modality, 2D view (squeeze a 2D scan, or slice a 3D one), resize the longest side, then pad or crop
to the model input. Axes after orientation are (R, A, S); a 3D model sees (S, A, R)-ordered
``(C, D, H, W)`` input: depth is the axial (S) axis.

Every geometric step is a MONAI ``InvertibleTransform`` (the 2D view included, :class:`To2DViewd`),
so :func:`traced_transforms` run forward records the operations and its ``inverse`` maps a
model-input-space map back onto the ingested scan's grid (:mod:`pipeline.explain.spatial`).
Intensity steps are not invertible and are skipped by the inverse.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Hashable, Mapping
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    InvertibleTransform,
    LoadImaged,
    MapTransform,
    Orientationd,
    Resized,
    ResizeWithPadOrCropd,
    ScaleIntensityd,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
    Spacingd,
    Transposed,
)
from monai.utils import TraceKeys

KEY = "image"


class To2DViewd(MapTransform, InvertibleTransform):
    """Turn a channel-first (C, R, A, S) volume into a 2D (C', R, A) image, invertibly.

    A 2D scan (one axis of length 1) is squeezed (and its channel repeated ``channels_for_2d``
    times); a 3D scan is sliced: ``centre`` takes the middle axial slice, ``mip`` the maximum over
    S, ``2.5d`` the middle three axial slices as channels (of the first input channel).

    >>> out = To2DViewd("image", "2.5d")({"image": torch.arange(2 * 2 * 5.).reshape(1, 2, 2, 5)})
    >>> tuple(out["image"].shape), out["image"][:, 0, 0].tolist()
    ((3, 2, 2), [1.0, 2.0, 3.0])

    The affine of a ``MetaTensor`` follows: the view's first two axes keep their columns and its
    origin moves to the middle slice (S index ``depth // 2``; for ``mip`` that is where the
    projection plane is put), or a squeezed axis moves to the third column. ``inverse`` rebuilds
    the (C, R, A, S) grid and its affine; as a view keeps one plane, the volume it rebuilds holds
    a map the way the view saw the scan: a ``centre`` view (or a one-channel map of a ``2.5d``
    view, such as an attribution summed over channels) on the middle slice and zeros elsewhere,
    a three-channel ``2.5d`` view on its three slices, a ``mip`` repeated along S; the repeated
    channels of a squeezed 2D scan collapse back to one.

    >>> view = To2DViewd("image", "centre")
    >>> scan = MetaTensor(torch.ones(1, 4, 5, 6), affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])))
    >>> out = view({"image": scan})
    >>> tuple(out["image"].shape), out["image"].affine[2, 3].item()  # slice 3 of 6, 3 mm apart
    ((1, 4, 5), 9.0)
    >>> back = view.inverse(out)["image"]
    >>> tuple(back.shape), bool(torch.equal(back.affine, scan.affine)), back[0, 0, 0].tolist(), back.applied_operations
    ((1, 4, 5, 6), True, [0.0, 0.0, 0.0, 1.0, 0.0, 0.0], [])
    """

    def __init__(self, keys: str, strategy: str, channels_for_2d: int = 1) -> None:
        super().__init__(keys)
        self.strategy = strategy
        self.channels_for_2d = channels_for_2d

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            values = image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)
            spatial = tuple(int(s) for s in values.shape[1:])
            view, info = self._view(values)
            if isinstance(image, MetaTensor):
                view = MetaTensor(view).copy_meta_from(image)
            d[key] = view
            self.push_transform(d, key, orig_size=spatial, extra_info=info, affine=_step(info))
        return d

    def _view(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        spatial = list(image.shape[1:])
        if 1 in spatial:  # a 2D scan: drop its singleton axis
            axis = spatial.index(1)
            view = image.squeeze(1 + axis)
            view = view.repeat(self.channels_for_2d, 1, 1) if self.channels_for_2d > 1 else view
            return view, {"squeezed_axis": axis, "slice": 0, "picks": [0]}
        depth = image.shape[-1]
        middle = depth // 2
        picks = [max(0, middle - 1), middle, min(depth - 1, middle + 1)]
        if self.strategy == "centre":
            view = image[..., middle]
        elif self.strategy == "mip":
            view = image.amax(dim=-1)
        else:
            view = image[0][..., picks].permute(2, 0, 1)
        return view, {"squeezed_axis": -1, "slice": middle, "picks": picks}

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            transform = self.get_most_recent_transform(d, key)
            info, spatial = transform[TraceKeys.EXTRA_INFO], tuple(int(s) for s in transform[TraceKeys.ORIG_SIZE])
            image = d[key]
            values = image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)
            volume = self._unview(values, info, spatial)
            if isinstance(image, MetaTensor):
                restored = MetaTensor(volume).copy_meta_from(image)
                with self.trace_transform(False):  # update the affine (and pixdim) without recording a step
                    volume = self.push_transform(restored, affine=np.linalg.inv(_step(info)))
            d[key] = volume
            self.pop_transform(d, key)
        return d

    def _unview(self, view: torch.Tensor, info: Mapping[str, Any], spatial: tuple[int, ...]) -> torch.Tensor:
        axis = int(info["squeezed_axis"])
        if axis >= 0:
            channels = view[:1] if self.channels_for_2d > 1 and view.shape[0] == self.channels_for_2d else view
            return channels.unsqueeze(1 + axis)
        if self.strategy == "mip":
            return view[..., None].repeat(1, 1, 1, spatial[2])
        picks = [int(p) for p in info["picks"]]
        if self.strategy == "2.5d" and view.shape[0] == len(picks):
            volume = torch.zeros((1, *spatial), dtype=view.dtype)
            for channel, index in enumerate(picks):
                volume[0, ..., index] = view[channel]
            return volume
        volume = torch.zeros((view.shape[0], *spatial), dtype=view.dtype)
        volume[..., int(info["slice"])] = view
        return volume


def _step(info: Mapping[str, Any]) -> np.ndarray:
    """The view's voxel-to-volume-voxel affine (4x4): new affine = volume affine @ step."""
    step = np.eye(4)
    axis = int(info["squeezed_axis"])
    if axis >= 0:  # columns: the two kept axes in order, then the squeezed one
        step[:3, :3] = np.eye(3)[:, [i for i in range(3) if i != axis] + [axis]]
    else:
        step[2, 3] = int(info["slice"])
    return step


def _intensity(params: dict[str, Any]) -> Any:
    mode = params["intensity"]
    if mode == "ct_window":
        centre, width = params["window"]
        return ScaleIntensityRanged(
            KEY, a_min=centre - width / 2, a_max=centre + width / 2, b_min=0.0, b_max=1.0, clip=True
        )
    if mode == "percentile":
        lower, upper = params["percentiles"]
        return ScaleIntensityRangePercentilesd(KEY, lower=lower, upper=upper, b_min=0.0, b_max=1.0, clip=True)
    return ScaleIntensityd(KEY, minv=0.0, maxv=1.0)


@lru_cache(maxsize=32)
def _chains(params_json: str) -> tuple[Compose, Compose]:
    # LoadImaged builds every MONAI reader, and the pydicom/nvImageCodec one complains on machines
    # without nvImageCodec. ScanLens reads NIfTI here only, so that complaint is noise.
    logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*nvImageCodec.*")
        steps = _steps(json.loads(params_json))
    # The cached chain is the traced one (the same transform objects) plus a plain float32 array.
    return Compose(steps), Compose([*steps, EnsureTyped(KEY, data_type="numpy", dtype=np.float32, track_meta=False)])


def deterministic_transforms(params: dict[str, Any]) -> Compose:
    """The cached chain for one scan, from :meth:`PreprocessConfig.effective` parameters (memoised):
    a path in, a float32 ``(C, *input_size)`` array out."""
    return _chains(json.dumps(params, sort_keys=True))[1]


def traced_transforms(params: dict[str, Any]) -> Compose:
    """The same chain ending in a ``MetaTensor`` that records its operations (memoised, sharing the
    cached chain's transforms); ``traced_transforms(params).inverse`` undoes its geometry."""
    return _chains(json.dumps(params, sort_keys=True))[0]


def _steps(params: dict[str, Any]) -> list[Any]:
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
    ]
    return steps
