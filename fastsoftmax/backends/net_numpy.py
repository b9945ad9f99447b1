"""``numpy`` backend of the two-layer net: the CS231n layers, composed.

Design note
-----------
The forward and backward passes are :mod:`fastsoftmax.backends._layers`
chained together (affine - ReLU - affine - softmax), so each formula exists
once, there; this module adds only the L2 penalty ``reg * (sum(W1**2) +
sum(W2**2))`` (biases are not penalised) and skips the one product the
layers would waste: the gradient with respect to X (``input_grad=False``),
as large as the forward product ``X @ W1``.

The two products that matter, ``X @ W1`` (N x D x H) and ``X.T @ dh``
(D x N x H), are GEMMs handed to BLAS; everything else touches (N, H) or
(N, C) arrays.  float32 stays float32 throughout.
"""

from ._layers import affine_backward, affine_forward, affine_relu_backward, affine_relu_forward, softmax_loss


def two_layer_loss(problem, n_threads):
    """Loss and gradients of affine - ReLU - affine - softmax, vectorized.

    Parameters
    ----------
    problem : fastsoftmax.backends._validate.NetProblem
        ``W1`` (D, H), ``b1`` (H,), ``W2`` (H, C), ``b2`` (C,), ``X`` (N, D),
        ``y`` (N,), ``reg``.
    n_threads : int
        Ignored: BLAS has its own pool (``threadpoolctl``).

    Returns
    -------
    loss : float
    dW1, db1, dW2, db2 : ndarray
        Shapes and dtype of the parameters.
    """
    W1, b1, W2, b2, X, y, reg = problem
    hidden, hidden_cache = affine_relu_forward(X, W1, b1)
    scores, scores_cache = affine_forward(hidden, W2, b2)
    loss, dscores = softmax_loss(scores, y)
    dhidden, dW2, db2 = affine_backward(dscores, scores_cache)
    _, dW1, db1 = affine_relu_backward(dhidden, hidden_cache, input_grad=False)
    loss += reg * (float((W1 * W1).sum(dtype="float64")) + float((W2 * W2).sum(dtype="float64")))
    dW1 += (2.0 * reg) * W1
    dW2 += (2.0 * reg) * W2
    return loss, dW1, db1, dW2, db2
