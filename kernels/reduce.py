"""The sync reduction, compiled: every backend combines instances with this one kernel, summing in
instance order (never arrival order), so all backends produce bit-identical results.

Dimensions: N = instances, C = columns being combined.
"""
from .config import jit


@jit
def combine_rows(out, rows, weights):
    # out (C,) overwritten with sum_k weights[k] * rows[k, :], k = 0 .. N-1 in order
    # rows (N, C) (any strides); weights (N,)
    for c in range(out.shape[0]):
        out[c] = 0.0
    for k in range(rows.shape[0]):
        w = weights[k]
        for c in range(out.shape[0]):
            out[c] += w * rows[k, c]
