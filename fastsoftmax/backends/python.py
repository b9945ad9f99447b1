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


def softmax_loss(W, X, y, reg):
    """Softmax loss and gradient with explicit loops.

    Parameters
    ----------
    W : ndarray, shape (D, C), float32 or float64
    X : ndarray, shape (N, D), same dtype as ``W``
    y : ndarray, shape (N,), integer labels in [0, C)
    reg : float

    Returns
    -------
    loss : float
    dW : ndarray, shape (D, C), dtype of ``W``
    """
    N, D = X.shape
    C = W.shape[1]
    Wl = W.tolist()
    Xl = X.tolist()
    yl = y.tolist()
    grad = [[0.0] * C for _ in range(D)]
    loss = 0.0
    for i in range(N):
        xi = Xl[i]
        scores = [0.0] * C
        for j in range(C):
            s = 0.0
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
            if g != 0.0:
                for d in range(D):
                    grad[d][j] += g * xi[d]
    loss /= N
    sq = 0.0
    for d in range(D):
        for j in range(C):
            w = Wl[d][j]
            sq += w * w
            grad[d][j] = grad[d][j] / N + 2.0 * reg * w
    loss += reg * sq
    return loss, np.array(grad, dtype=W.dtype).reshape(D, C)  # reshape keeps C when D == 0
