"""Numba kernels of fastffnn, installed as ``fastffnn.kernels``: compute only, no validation."""
from . import config, layers, span
from .span import n_params, predict_proba, train_span, train_span_gil, train_spans_parallel, workspace_size

__all__ = ["config", "layers", "span", "n_params", "predict_proba", "train_span", "train_span_gil",
           "train_spans_parallel", "workspace_size"]
