"""Coreset subsampling of the patch memory bank: greedy k-center on a random projection.

The exact greedy k-center (PatchCore's coreset) is sequential: K iterations,
each updating every candidate's distance to its nearest selected centre. What
makes it slow is the cost per iteration (N x D with D in the hundreds, and a
Python loop over per-element ops). Here:

* candidates are projected to ``proj_dim`` (default 32) dimensions with a
  Gaussian random matrix (Johnson-Lindenstrauss: distances are kept within a
  small factor, which is all the greedy choice needs);
* each iteration is one matrix-vector product (``||p||^2 - 2 p.c + ||c||^2``)
  and one in-place ``minimum``, on float32 torch tensors;
* when N exceeds ``max_candidates``, a uniform random subset is used as the
  candidate pool (the bank then covers the pool; reported in the summary).

Memory bound: the bank holds at most ``max_bank`` rows (and at most
``ratio`` x N): ``max_bank x D x 4`` bytes, whatever the number of images.
"""
from __future__ import annotations

import time

import torch


def kcenter_greedy(x: torch.Tensor, k: int, proj_dim: int = 32, blocks: int = 0, seed: int = 0,
                   progress=None) -> torch.Tensor:
    """Indices of ``k`` rows of ``x`` (N, D) chosen by greedy k-center in a random projection.

    ``blocks`` > 1 runs the greedy independently on that many random disjoint
    blocks of the rows, in one batched loop (``k / blocks`` iterations instead
    of ``k``); each block gets ``k / blocks`` centres. Every row is then within
    the largest block's covering radius of a centre: the same guarantee as the
    exact greedy on a random sample of ``N / blocks`` rows, ``blocks`` times faster.
    ``blocks=0`` picks ``max(1, k // 128)``.
    """
    n, d = x.shape
    k = int(min(k, n))
    if k >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    if proj_dim and proj_dim < d:
        p = torch.randn(d, proj_dim, generator=g) / proj_dim ** 0.5
        z = x @ p
    else:
        z = x
    b = int(blocks) if blocks else max(1, k // 128)
    b = max(1, min(b, k))
    m = n // b                                   # rows per block (the n % b leftovers join no block)
    kb = k // b                                  # centres per block; the remainder goes to a final pass
    perm = torch.randperm(n, generator=g)
    rows = perm[: m * b].view(b, m)              # (b, m) original indices
    zb = z[rows].contiguous()                    # (b, m, D')
    sq = (zb * zb).sum(2)                        # (b, m)
    ar = torch.arange(b)
    chosen = torch.empty(b, kb, dtype=torch.long)
    j = torch.randint(m, (b,), generator=g)
    step = max(1, kb // 50)
    mind = None
    for i in range(kb):
        chosen[:, i] = j
        c = zb[ar, j]                            # (b, D')
        dist = sq - 2.0 * torch.bmm(zb, c.unsqueeze(2)).squeeze(2) + sq[ar, j].unsqueeze(1)
        mind = dist if mind is None else torch.minimum(mind, dist, out=mind)
        j = torch.argmax(mind, dim=1)
        if progress is not None and i % step == 0:
            progress(i * b, k)
    sel = rows.gather(1, chosen).reshape(-1)
    extra = k - sel.numel()
    if extra > 0:                                # farthest remaining rows (in their block's metric)
        far = rows.reshape(-1)[torch.topk(mind.reshape(-1), extra).indices]
        sel = torch.cat([sel, far])
    return sel


def subsample(x: torch.Tensor, max_bank: int, ratio: float = 0.1, max_candidates: int = 200_000,
              proj_dim: int = 32, blocks: int = 0, seed: int = 0, progress=None) -> tuple[torch.Tensor, dict]:
    """The memory bank: at most ``max_bank`` rows of ``x`` (and ``ratio`` of them), by k-center greedy."""
    t0 = time.perf_counter()
    n = x.shape[0]
    k = max(1, min(int(max_bank), int(round(ratio * n)) if ratio < 1 else n))
    g = torch.Generator().manual_seed(seed + 1)
    pool = x
    if n > max_candidates:
        idx = torch.randperm(n, generator=g)[:max_candidates]
        pool = x[idx]
    sel = kcenter_greedy(pool, k, proj_dim=proj_dim, blocks=blocks, seed=seed, progress=progress)
    bank = pool[sel].clone()
    info = {"n_patches": int(n), "n_candidates": int(pool.shape[0]), "bank_size": int(bank.shape[0]),
            "dim": int(x.shape[1]), "proj_dim": int(proj_dim), "max_bank": int(max_bank), "ratio": float(ratio), "blocks": int(blocks),
            "coreset_s": round(time.perf_counter() - t0, 3)}
    return bank, info
