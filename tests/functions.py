"""Forwards with known gradients, and deliberately wrong gradients (mutants), for the engine tests.

Each forward broadcasts over a leading batch axis on any float argument.
"""

from __future__ import annotations

import numpy as np


def linear(W, x, b):
    return np.einsum("...ij,...j->...i", W, x) + b


def linear_dx(dy, W, x, b):
    return W.T @ dy


def linear_dW(dy, W, x, b):
    return np.outer(dy, x)


def softmax_ce(y, gt):
    m = np.max(y, axis=-1, keepdims=True)
    return np.log(np.sum(np.exp(y - m), axis=-1)) + m[..., 0] - y[..., gt]


def softmax_ce_dy(dL, y, gt):
    p = np.exp(y - y.max())
    p /= p.sum()
    p[gt] -= 1
    return dL * p


BN_EPS = 1e-5


def batchnorm(x, gamma, beta):
    """Batch-norm over axis -2 (samples), features on axis -1."""
    mu = x.mean(axis=-2, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-2, keepdims=True)
    return gamma[..., None, :] * (x - mu) / np.sqrt(var + BN_EPS) + beta[..., None, :]


def batchnorm_dx(dy, x, gamma, beta):
    mu = x.mean(axis=0)
    var = ((x - mu) ** 2).mean(axis=0)
    xhat = (x - mu) / np.sqrt(var + BN_EPS)
    return gamma / np.sqrt(var + BN_EPS) * (
        dy - dy.mean(axis=0) - xhat * (dy * xhat).mean(axis=0)
    )


def batchnorm_dx_missing_term(dy, x, gamma, beta):
    """Mutant: drops the xhat * mean(dy * xhat) term (the classic batch-norm slip)."""
    mu = x.mean(axis=0)
    var = ((x - mu) ** 2).mean(axis=0)
    return gamma / np.sqrt(var + BN_EPS) * (dy - dy.mean(axis=0))


def smooth(x):
    """A mix of polynomial, exp, sin and log terms, element-wise."""
    return x**3 - 2 * x + np.exp(0.5 * x) + np.sin(3 * x) + np.log(1 + x**2)


def smooth_dx(dy, x):
    return dy * (3 * x**2 - 2 + 0.5 * np.exp(0.5 * x) + 3 * np.cos(3 * x) + 2 * x / (1 + x**2))


def matmul(A, B):
    return A @ B


def matmul_dA(dy, A, B):
    return dy @ B.T


def conv1d(x, w):
    """Valid 1-D correlation, y_i = sum_k x_{i+k} w_k."""
    k = w.shape[-1]
    windows = np.lib.stride_tricks.sliding_window_view(x, k, axis=-1)
    return np.einsum("...ik,...k->...i", windows, w)


def conv1d_dx(dy, x, w):
    dx = np.zeros_like(x)
    for k in range(w.shape[0]):
        dx[k : k + dy.shape[0]] += dy * w[k]
    return dx


def conv1d_dx_off_by_one(dy, x, w):
    """Mutant: the window offset is shifted by one (an off-by-one index)."""
    dx = np.zeros_like(x)
    for k in range(w.shape[0]):
        dx[k + 1 : k + 1 + dy.shape[0]] += dy[: x.shape[0] - k - 1] * w[k]
    return dx
