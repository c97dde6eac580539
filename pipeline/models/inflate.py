"""I3D inflation: a 2D ResNet-50 becomes a 3D one that starts from the same weights.

Every ``k x k`` convolution with ``k > 1`` becomes ``t x k x k`` (``t = depth_kernel``; the stem
uses ``stem_depth_kernel``), 1x1 convolutions become 1x1x1, BatchNorm and pooling become 3D.
``mode="average"`` repeats the 2D kernel along depth and divides by ``t`` (Carreira & Zisserman
2017); ``mode="centre"`` puts it on the centre slice and zeros the rest. Either way a volume of
identical slices gives (nearly, or with ``centre`` exactly) the 2D network's response.
Input ``(N, C, D, H, W)``; D is the slice axis (for RAS volumes, the S axis after transposing).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import UserInputError

MODES = ("average", "centre")
DEPTH_PADDINGS = ("replicate", "zeros")


class DepthReplicateConv3d(nn.Conv3d):
    """A Conv3d whose depth padding replicates the first and last slice (height/width pad with zeros).

    With zero depth padding, the first and last slices of a volume see an artificial dark border; with
    replication, a stack of identical slices gives exactly the 2D response in ``average`` mode too.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        depth_pad = self.kernel_size[0] // 2
        if depth_pad:
            x = F.pad(x, (0, 0, 0, 0, depth_pad, depth_pad), mode="replicate")
        return F.conv3d(x, self.weight, self.bias, self.stride, (0, *self.padding[1:]), self.dilation, self.groups)


def _inflate_conv(conv: nn.Conv2d, depth: int, depth_stride: int, mode: str, depth_padding: str) -> nn.Conv3d:
    kh, kw = conv.kernel_size
    sh, sw = conv.stride
    t = depth if max(kh, kw) > 1 else 1
    conv_class = DepthReplicateConv3d if depth_padding == "replicate" else nn.Conv3d
    out = conv_class(
        conv.in_channels,
        conv.out_channels,
        kernel_size=(t, kh, kw),
        stride=(depth_stride, sh, sw),
        padding=(t // 2, *conv.padding),
        bias=conv.bias is not None,
        groups=conv.groups,
    )
    with torch.no_grad():
        weight = conv.weight.unsqueeze(2)  # (out, in, 1, kh, kw)
        if mode == "average":
            out.weight.copy_(weight.repeat(1, 1, t, 1, 1) / t)
        else:
            out.weight.zero_()
            out.weight[:, :, t // 2] = conv.weight
        if conv.bias is not None:
            assert out.bias is not None  # built with bias=True just above
            out.bias.copy_(conv.bias)
    return out


def _side(size: int | tuple[int, ...]) -> int:
    """The side of a square 2D pooling window, stride or padding, given as an int or as equal ints."""
    if isinstance(size, int):
        return size
    if len(set(size)) != 1:
        raise ValueError(f"cannot inflate a non-square 2D pooling size {size}")
    return size[0]


def _inflate_norm(norm: nn.BatchNorm2d) -> nn.BatchNorm3d:
    out = nn.BatchNorm3d(
        norm.num_features,
        eps=norm.eps,
        momentum=norm.momentum,
        affine=norm.affine,
        track_running_stats=norm.track_running_stats,
    )
    out.load_state_dict(norm.state_dict())
    return out


@dataclass(frozen=True)
class Inflation:
    """How a 2D network is inflated to 3D (recorded on the model card as a dict of these fields).

    ``stem_depth_kernel``/``stem_depth_stride`` set the stem's depth kernel and stride, e.g. 1 and 1
    for anisotropic volumes with thick slices. The max-pool keeps depth when the stem stride is 1.
    Strided convolutions later in the network downsample depth like height and width.
    ``depth_padding="zeros"`` gives classic I3D padding; the default replicates edge slices.
    """

    mode: str = "average"
    depth_kernel: int = 3
    stem_depth_kernel: int = 7
    stem_depth_stride: int = 2
    depth_padding: str = "replicate"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UserInputError(f"inflation mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.depth_padding not in DEPTH_PADDINGS:
            raise UserInputError(f"depth padding must be one of {', '.join(DEPTH_PADDINGS)}")
        kernels = (self.depth_kernel, self.stem_depth_kernel)
        if any(k < 1 or k % 2 == 0 for k in kernels):
            raise UserInputError("depth kernels must be odd positive integers")


def inflate(model_2d: nn.Module, spec: Inflation = Inflation()) -> nn.Module:
    """Return a 3D copy of ``model_2d`` (which is left untouched), inflated as ``spec`` says; see the
    module docstring. The copy's state-dict keys are the 2D network's."""
    mode, depth_kernel, depth_padding = spec.mode, spec.depth_kernel, spec.depth_padding
    stem_depth_kernel, stem_depth_stride = spec.stem_depth_kernel, spec.stem_depth_stride
    model = copy.deepcopy(model_2d)
    for name, module in list(model.named_modules()):
        parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(module, nn.Conv2d):
            stem = name == "conv1"
            new: nn.Module = _inflate_conv(  # strided convs downsample depth like height and width
                module,
                stem_depth_kernel if stem else depth_kernel,
                stem_depth_stride if stem else module.stride[0],
                mode,
                depth_padding,
            )
        elif isinstance(module, nn.BatchNorm2d):
            new = _inflate_norm(module)
        elif isinstance(module, nn.MaxPool2d):
            depth_pool = 3 if stem_depth_stride > 1 else 1
            kernel, stride, padding = _side(module.kernel_size), _side(module.stride), _side(module.padding)
            new = nn.MaxPool3d(
                kernel_size=(depth_pool, kernel, kernel),
                stride=(depth_pool - 1 or 1, stride, stride),
                padding=(depth_pool // 2, padding, padding),
            )
        elif isinstance(module, nn.AdaptiveAvgPool2d):
            new = nn.AdaptiveAvgPool3d(1)
        else:
            continue
        setattr(parent, leaf, new)
    model.train(model_2d.training)  # new BatchNorm modules start in training mode
    return model


def final_feature_shape(model: nn.Module, input_shape: tuple[int, ...], in_channels: int = 1) -> tuple[int, ...]:
    """Spatial shape of ``layer4``'s output for one input of ``input_shape`` ((H, W) or (D, H, W)).

    Runs a copy of the model on the meta device: no memory, no compute.
    """
    shapes: list[tuple[int, ...]] = []
    probe = copy.deepcopy(model).to("meta").eval()
    probe.get_submodule("layer4").register_forward_hook(
        lambda module, args, output: shapes.append(tuple(output.shape[2:]))
    )
    with torch.no_grad():
        probe(torch.empty((1, in_channels, *input_shape), device="meta"))
    return shapes[0]


def min_batch_size(model: nn.Module, input_shape: tuple[int, ...], in_channels: int = 1) -> int:
    """Smallest training batch for which BatchNorm sees more than one value per channel in ``layer4``.

    With the stride-2 stem, a 32^3 input reaches 1x1x1 in ``layer4``: training needs batch size >= 2.
    """
    voxels = 1
    for size in final_feature_shape(model, input_shape, in_channels):
        voxels *= size
    return 2 if voxels == 1 else 1
