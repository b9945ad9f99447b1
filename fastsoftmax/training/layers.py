"""The layers of a CS231n network: affine, ReLU and the softmax loss on scores.

The formulas live with the kernels, in :mod:`fastsoftmax.backends._layers`
(the two-layer net's ``numpy`` backend is their composition, and the kernels
import nothing from the training kit); this is where the training kit, and a
student following the exercise, finds them.
"""

from ..backends._layers import (  # noqa: F401  (re-exported)
    __all__,
    affine_backward,
    affine_forward,
    affine_relu_backward,
    affine_relu_forward,
    relu_backward,
    relu_forward,
    softmax_loss,
)
