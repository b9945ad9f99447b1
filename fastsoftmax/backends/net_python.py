"""``python`` backend of the two-layer net: the readable reference, in plain loops.

Design note
-----------
The oracle every other net backend is tested against, written to be
obviously right: for each example, the hidden layer ``h = max(0, x W1 + b1)``
by explicit sums, the scores ``s = h W2 + b2``, the softmax with the max
shift (log-sum-exp), then the chain rule backwards one scalar at a time, in
Python floats (IEEE double) whatever the input dtype.  Arrays become nested
lists once, up front; no NumPy call runs inside a loop.  It shares no code
with :mod:`fastsoftmax.backends._layers` (the ``numpy`` backend's formulas).

Cost: about ``2 * N * H * (D + C)`` interpreted multiply-adds, seconds for a
few hundred examples of a few hundred features; the benchmark does not run
it on CIFAR shapes (:data:`fastsoftmax.harness.agreement.PYTHON_MAX_WORK`).
"""

import math

import numpy as np


def two_layer_loss(problem, n_threads):
    """Loss and gradients of affine - ReLU - affine - softmax, with loops.

    Parameters
    ----------
    problem : fastsoftmax.backends._validate.NetProblem
        ``W1`` (D, H), ``b1`` (H,), ``W2`` (H, C), ``b2`` (C,), ``X`` (N, D),
        ``y`` (N,), ``reg``.
    n_threads : int
        Ignored (one interpreter thread).

    Returns
    -------
    loss : float
        ``mean_i(-log softmax(s_i)[y_i]) + reg * (sum(W1**2) + sum(W2**2))``.
    dW1, db1, dW2, db2 : ndarray
        Shapes and dtype of the parameters.
    """
    W1, b1, W2, b2, X, y, reg = problem
    N, D = X.shape
    H, C = W2.shape
    W1l, b1l, W2l, b2l = W1.tolist(), b1.tolist(), W2.tolist(), b2.tolist()
    Xl, yl = X.tolist(), y.tolist()
    gW1 = [[0.0] * H for _ in range(D)]
    gb1 = [0.0] * H
    gW2 = [[0.0] * C for _ in range(H)]
    gb2 = [0.0] * C
    loss = 0.0
    for i in range(N):
        x = Xl[i]
        # forward
        hidden = []
        for k in range(H):
            a = b1l[k]
            for d in range(D):
                a += x[d] * W1l[d][k]
            # NaN stays NaN (as np.maximum does), so a NaN in X reaches the result
            hidden.append(0.0 if a <= 0.0 else a)
        scores = []
        for c in range(C):
            s = b2l[c]
            for k in range(H):
                s += hidden[k] * W2l[k][c]
            scores.append(s)
        shift = max(scores)
        exps = [math.exp(s - shift) for s in scores]
        total = sum(exps)
        loss += math.log(total) - (scores[yl[i]] - shift)
        # backward: dscores = softmax - onehot (divided by N at the end)
        dscores = [exps[c] / total - (1.0 if c == yl[i] else 0.0) for c in range(C)]
        for c in range(C):
            gb2[c] += dscores[c]
            for k in range(H):
                gW2[k][c] += hidden[k] * dscores[c]
        for k in range(H):
            if hidden[k] <= 0.0:  # ReLU: no gradient through an inactive unit
                continue
            dh = 0.0
            for c in range(C):
                dh += dscores[c] * W2l[k][c]
            gb1[k] += dh
            for d in range(D):
                gW1[d][k] += x[d] * dh
    sq = 0.0
    for W, G in ((W1l, gW1), (W2l, gW2)):
        for row, grow in zip(W, G):
            for j, w in enumerate(row):
                sq += w * w
                grow[j] = grow[j] / N + 2.0 * reg * w
    loss = loss / N + reg * sq
    dtype = W1.dtype
    return (
        loss,
        np.array(gW1, dtype=dtype).reshape(D, H),
        np.array([g / N for g in gb1], dtype=dtype),
        np.array(gW2, dtype=dtype).reshape(H, C),
        np.array([g / N for g in gb2], dtype=dtype),
    )
