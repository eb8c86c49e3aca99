"""Numba kernels of fastffnn, installed as ``fastffnn.kernels``: compute only, no validation."""
from . import config, layers, layout, span
from .layout import n_params
from .span import predict_proba, train_span, train_span_gil, train_spans_parallel, workspace_size

__all__ = ["config", "layers", "layout", "span", "n_params", "predict_proba", "train_span", "train_span_gil",
           "train_spans_parallel", "workspace_size"]
