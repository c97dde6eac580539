"""SyncBatchNorm for every device: torch's :class:`torch.nn.SyncBatchNorm` on CUDA, and the same
statistics over gloo on CPU, where torch's kernels (``batch_norm_stats`` and friends) do not exist
and DDP refuses ``SyncBatchNorm`` layers.

With synchronised BatchNorm, N processes with a per-process batch of B/N compute exactly what one
process computes with a batch of B: the mean and variance are those of the global batch. The CPU
path reduces the per-channel sums with a differentiable all-reduce (the backward pass all-reduces
the gradient, as torch's own SyncBatchNorm does), so the backward pass is the global batch's gradient as well (DDP then
averages the parameter gradients as usual). Two passes (mean, then centred squares) keep the
variance as exact as torch's own kernel, in float64 as it accumulates. Evaluation mode uses the running statistics, as always.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn


class _AllReduceSum(torch.autograd.Function):
    """Sum over the process group, differentiable: the gradient of a sum is the sum of the gradients."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over every process of the default group, with the summed gradient flowing back."""
    result: torch.Tensor = _AllReduceSum.apply(tensor)
    return result


class GlooSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm (any number of spatial dimensions) whose training-mode statistics are those of the
    whole process group, for CPU tensors. DDP refuses torch's own :class:`~torch.nn.SyncBatchNorm`
    on CPU modules, hence a class of its own; parameters and buffers keep BatchNorm's names."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        # In a process group of any size (one included) the statistics go through the group, so a run
        # under torchrun computes the same arithmetic whatever the number of processes.
        synchronise = self.training and dist.is_available() and dist.is_initialized()
        if not synchronise:
            return super().forward(input)
        self._check_input_dim(input)
        channels = input.shape[1]
        reduce_dims = [0, *range(2, input.dim())]
        shape = [1, channels] + [1] * (input.dim() - 2)
        x = input.double()  # statistics in float64, as torch's own CPU kernel accumulates them
        count = x.new_tensor([x.numel() / channels])
        sums = all_reduce_sum(torch.cat([x.sum(reduce_dims), count]))
        total = sums[-1]
        mean = sums[:channels] / total
        centred = x - mean.view(shape)
        var = all_reduce_sum((centred * centred).sum(reduce_dims)) / total
        self._update_running_stats(mean.detach(), var.detach(), total.detach())
        scale = torch.rsqrt(var + self.eps)  # y = x * scale' + shift', as torch's kernel applies it
        if self.affine:
            scale = scale * self.weight.double()
            shift = self.bias.double() - mean * scale
        else:
            shift = -mean * scale
        dtype = input.dtype if input.is_floating_point() else torch.float32
        return input * scale.to(dtype).view(shape) + shift.to(dtype).view(shape)

    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, total: torch.Tensor) -> None:
        if not self.track_running_stats or self.running_mean is None or self.running_var is None:
            return
        assert self.num_batches_tracked is not None
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            unbiased = var * total / (total - 1).clamp(min=1)
            self.running_mean.mul_(1 - momentum).add_(mean.to(self.running_mean.dtype), alpha=momentum)
            self.running_var.mul_(1 - momentum).add_(unbiased.to(self.running_var.dtype), alpha=momentum)


def synchronise_batchnorm(network: nn.Module, cuda: bool) -> nn.Module:
    """``network`` with every BatchNorm layer synchronised across the process group: torch's
    :class:`~torch.nn.SyncBatchNorm` on CUDA, :class:`GlooSyncBatchNorm` on CPU. Parameter and buffer
    names do not change, so checkpoints load either way. Call before wrapping in DDP."""
    if cuda:
        return nn.SyncBatchNorm.convert_sync_batchnorm(network)
    for module in network.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, nn.SyncBatchNorm):
            module.__class__ = GlooSyncBatchNorm  # same attributes: BatchNorm1d/2d/3d only check the input's rank
    return network
