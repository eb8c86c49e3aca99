"""The flat parameter layout, defined once: for each layer l, the weight matrix (sizes[l],
sizes[l+1]) row-major, then its bias (sizes[l+1],).  ``sizes`` = (F, hidden..., K).  The kernels
read it through ``layer_offset_jit``; Python (``network.Topology``, the numpy kernel) through
``layer_offset`` and ``n_params`` -- the same function."""
from .config import jit


def layer_offset(sizes, l):
    """Offset of layer l's weight in the flat (P,) buffer; ``layer_offset(sizes, L)`` is P."""
    off = 0
    for m in range(l):
        off += sizes[m] * sizes[m + 1] + sizes[m + 1]
    return off


layer_offset_jit = jit(inline="always")(layer_offset)


def n_params(sizes):
    """P for a network with layer sizes ``sizes`` = (F, hidden..., K)."""
    return int(layer_offset(sizes, len(sizes) - 1))
