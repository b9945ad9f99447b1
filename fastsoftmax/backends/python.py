"""``python`` backend: the readable reference, in plain Python loops.

Design note
-----------
This is the oracle every other backend is tested against, so it is written to
be obviously right rather than fast: one loop over examples, one over classes,
one over features, in Python floats (IEEE double) whatever the input dtype, and
no NumPy call inside a loop.  Arrays are turned into nested lists once, up
front.  The only numerical care taken is the one that matters for
correctness: scores are shifted by their row maximum before ``exp`` (the
log-sum-exp trick), so no finite score overflows.

Cost: about 4*N*D*C Python-level float operations; N = 500 on CIFAR shapes
takes seconds, which is why the benchmarks run it only there.
"""

import math

import numpy as np


def softmax_loss(problem, n_threads=1):
    """Softmax loss and gradient with explicit loops.

    Parameters
    ----------
    problem : fastsoftmax.backends._validate.Problem
        ``W`` (D, C) and ``X`` (N, D), float32 or float64; ``y`` (N,) intp;
        ``reg``; optional bias ``b`` (C,), batch ``rows`` (n,) and ``out``.
    n_threads : int
        Ignored: the reference runs on one thread.

    Returns
    -------
    loss : float
    dW : ndarray, shape (D, C), dtype of ``W`` (``out`` if given)
    db : ndarray, shape (C,), dtype of ``W``; None without ``b``
    """
    W, X, y, reg, b, rows, out = problem
    D, C = W.shape
    Wl = W.tolist()
    yl = y.tolist()
    bias = [0.0] * C if b is None else b.tolist()
    batch = range(X.shape[0]) if rows is None else rows.tolist()
    grad = [[0.0] * C for _ in range(D)]
    dbias = [0.0] * C
    loss = 0.0
    for i in batch:
        xi = X[i].tolist()
        scores = [0.0] * C
        for j in range(C):
            s = bias[j]
            for d in range(D):
                s += xi[d] * Wl[d][j]
            scores[j] = s
        shift = max(scores)
        exps = [math.exp(s - shift) for s in scores]
        total = sum(exps)
        # -log p[y] = log(sum exp(s - shift)) - (s[y] - shift)
        loss += math.log(total) - (scores[yl[i]] - shift)
        for j in range(C):
            g = exps[j] / total - (1.0 if j == yl[i] else 0.0)
            dbias[j] += g
            if g != 0.0:
                for d in range(D):
                    grad[d][j] += g * xi[d]
    N = len(batch)
    loss /= N
    sq = 0.0
    for d in range(D):
        for j in range(C):
            w = Wl[d][j]
            sq += w * w
            grad[d][j] = grad[d][j] / N + 2.0 * reg * w
    loss += reg * sq
    dW = np.array(grad, dtype=W.dtype).reshape(D, C)  # reshape keeps C when D == 0
    if out is not None:
        out[...] = dW
        dW = out
    db = None if b is None else np.array([g / N for g in dbias], dtype=W.dtype)
    return loss, dW, db
