"""Faster equivalents of two formulas of :mod:`ignite_igan.functional` and :mod:`ignite_igan.nn`; private.

The readable formulas are :func:`ignite_igan.functional.minibatch_features` (with
:func:`ignite_igan.functional.minibatch_l1_distances`) and the weight norm ``sqrt(eps + Σ V²)`` of
:mod:`ignite_igan.nn`. The layers use the versions below instead, chosen in one commented place at the top of
:mod:`ignite_igan.nn`; ``tests/test_functional.py`` and ``tests/test_nn.py`` check that they agree (forward and
gradients, float64). Nothing here checks its inputs: the layers build them.

- :func:`minibatch_features` and :func:`minibatch_l1_distances` never build the (N, N, B, C) differences of the
  broadcast formula: peak memory O(N²·B) instead of O(N²·B·C) (``benchmarks/minibatch_discrimination.py``).
- :func:`unit_norm` has a backward pass of one multiplication over ``V`` instead of autograd's three.
"""
from __future__ import annotations

from typing import Iterator, Optional, Tuple

import torch
from torch import Tensor

# The (B, N, N) tensors below are processed in tiles of about this size on the CPU: every pass over a tile (one
# per kernel dimension and operation) then runs in the core's cache instead of streaming N²·B values from memory
# each time. 512 KiB measured fastest at N = 100 and N = 1024 (benchmarks/minibatch_discrimination.py); smaller
# tiles pay the per-operation overhead of more, smaller operations.
_CPU_TILE_BYTES = 512 * 1024


def _kernel_columns(m: Tensor) -> Tensor:
    """``m`` (N, B, C) as contiguous rows ``columns[c, b] = m[:, b, c]``, shape (C, B, N), without autograd."""
    return m.detach().permute(2, 1, 0).contiguous()


def _tiles(square: Tensor) -> Iterator[Tuple[slice, slice]]:
    """(kernels, rows) tiles of a (B, N, N) tensor, each about ``_CPU_TILE_BYTES`` on the CPU, one tile elsewhere."""
    b, n, _ = square.shape
    if square.device.type != "cpu":  # a GPU gains nothing from tiling and would pay one launch per operation
        yield slice(0, b), slice(0, n)
        return
    elements = max(1, _CPU_TILE_BYTES // square.element_size())
    if n * n <= elements:  # whole (N, N) squares, several kernels at a time
        step = elements // max(1, n * n)
        for start in range(0, b, step):
            yield slice(start, min(b, start + step)), slice(0, n)
    else:  # one kernel at a time, a band of rows
        step = max(1, elements // n)
        for kernel in range(b):
            for start in range(0, n, step):
                yield slice(kernel, kernel + 1), slice(start, min(n, start + step))


def _tile_l1_distances(
    columns: Tensor, kernels: slice, rows: slice, out: Tensor, scratch: Optional[Tensor]
) -> Optional[Tensor]:
    """Writes ``d[b, i, j]`` for b in ``kernels``, i in ``rows``, every j into ``out``, one kernel dimension at a
    time; ``scratch`` is a buffer of at least ``out.numel()`` elements (or None), returned for the next tile."""
    if columns.shape[0] > 1 and (scratch is None or scratch.numel() < out.numel()):
        scratch = columns.new_empty(out.numel())
    for k in range(columns.shape[0]):
        column = columns[k, kernels]  # (b, N)
        target = out if k == 0 else scratch[: out.numel()].view(out.shape)
        torch.sub(column[:, rows].unsqueeze(2), column.unsqueeze(1), out=target).abs_()
        if k:
            out.add_(target)
    return scratch


def minibatch_l1_distances(m: Tensor) -> Tensor:
    """:func:`ignite_igan.functional.minibatch_l1_distances` without autograd, accumulated tile by tile.

    Returns the (N, N, B) distances as a (non-contiguous) view of a (B, N, N) tensor; the peak memory is the result.
    """
    columns = _kernel_columns(m)
    distances = m.new_empty(m.shape[1], m.shape[0], m.shape[0])
    scratch = None
    for kernels, rows in _tiles(distances):
        scratch = _tile_l1_distances(columns, kernels, rows, distances[kernels, rows], scratch)
    return distances.permute(1, 2, 0)


class _MinibatchFeatures(torch.autograd.Function):
    """``o[i, b] = Σ_{j≠i} exp(-d[i, j, b])`` with a hand-written backward pass.

    Autograd through the plain expression would save one (N, N, B, C) tensor for the backward pass. Here only
    ``s = exp(-d)`` is kept, as one (B, N, N) tensor, and both passes work through it tile by tile (see
    :func:`_tiles`): the forward pass accumulates a tile's distances one kernel dimension at a time and turns them
    into ``s`` while the tile is in cache, the backward pass recomputes the signs of the differences the same way.
    Beyond ``s``, each pass needs one tile of scratch space.
    """

    @staticmethod
    def forward(ctx, m: Tensor) -> Tensor:  # type: ignore[override]
        columns = _kernel_columns(m)  # (C, B, N)
        _, b, n = columns.shape
        similarity = m.new_empty(b, n, n)
        features = m.new_empty(b, n)
        scratch = None
        for kernels, rows in _tiles(similarity):
            tile = similarity[kernels, rows]
            scratch = _tile_l1_distances(columns, kernels, rows, tile, scratch)
            tile.neg_().exp_()
            # The reference adds 1e6 to the self-distance before exp(-d); exp(-1e6) is exactly 0 in float32 and
            # float64, so multiplying the diagonal's exp(-0) = 1 by 0 is the same computation without the large
            # constant. A multiplication, not zero_(): an infinite input's self-distance inf - inf stays NaN, as in
            # the formula (docs/nan_policy.md).
            tile.diagonal(offset=rows.start, dim1=1, dim2=2).mul_(0)
            features[kernels, rows] = tile.sum(dim=2)
        ctx.save_for_backward(columns, similarity)
        return features.t().contiguous()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output: Tensor) -> Tensor:  # type: ignore[override]
        columns, similarity = ctx.saved_tensors
        c, b, n = columns.shape
        # With g = grad_output and a[b, i, j] = sign(m[i, b, k] - m[j, b, k]) s[b, i, j] for one dimension k,
        # dL/dm[i, b, k] = -Σ_j a[b, i, j] (g[i, b] + g[j, b]): the i-th row of d[b, i, j] = Σ_k |...| gets the
        # gradient g[i, b], the j-th row by the symmetry of d. One batched product gives both sums over j.
        g = grad_output.t()  # (B, N)
        ones_and_g = torch.stack([torch.ones_like(g), g], dim=2)  # (B, N, 2)
        grad = columns.new_empty(c, b, n)
        scratch = None
        for kernels, rows in _tiles(similarity):
            tile = similarity[kernels, rows]
            if scratch is None or scratch.numel() < tile.numel():
                scratch = similarity.new_empty(tile.numel())
            signed = scratch[: tile.numel()].view(tile.shape)
            for k in range(c):
                column = columns[k, kernels]
                torch.sub(column[:, rows].unsqueeze(2), column.unsqueeze(1), out=signed).sign_().mul_(tile)
                sums = torch.bmm(signed, ones_and_g[kernels])  # (b, rows, 2): Σ_j a and Σ_j a g[j]
                grad[k, kernels, rows] = torch.addcmul(sums[..., 1], sums[..., 0], g[kernels, rows])
        return grad.neg_().permute(2, 1, 0)


#: :func:`ignite_igan.functional.minibatch_features` in O(N²·B) memory, forward and backward: ``(m) -> o``.
minibatch_features = _MinibatchFeatures.apply


class _UnitNorm(torch.autograd.Function):
    """``sqrt(eps + Σ V²)`` per output unit, with a backward pass of one multiplication over ``V``.

    The gradient is ``V * (grad / norm)`` per unit. ``torch.linalg.vector_norm``'s own backward spends three passes
    over ``V`` on it (a division, a multiplication and a mask for zero norms); ``V`` is the largest tensor of a
    weight-normalized layer, and on the MNIST network's CPU step those passes were about a tenth of the time. A
    zero direction has no defined gradient in any form (the reference's norm has no epsilon either).
    """

    @staticmethod
    def forward(ctx, weight: Tensor, out_dim: int, eps: float) -> Tensor:  # type: ignore[override]
        reduce = [d for d in range(weight.dim()) if d != out_dim]
        norm = torch.linalg.vector_norm(weight, dim=reduce)
        if eps:
            norm = (eps + norm.square()).sqrt()
        ctx.out_dim = out_dim
        ctx.save_for_backward(weight, norm)
        return norm

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tuple[Tensor, None, None]:  # type: ignore[override]
        weight, norm = ctx.saved_tensors
        shape = [1] * weight.dim()
        shape[ctx.out_dim] = -1
        return weight * (grad / norm).view(shape), None, None


#: ``sqrt(eps + Σ V²)`` over every axis of ``weight`` but ``out_dim``, with the one-pass backward:
#: ``unit_norm(weight, out_dim, eps)``.
unit_norm = _UnitNorm.apply
