"""The CS231n training kit, built on the fastest backend.

Layout
------
``classifier``  :class:`Softmax`: minibatch SGD, predict, save/load
``sgd``         the shared minibatch step (rows read in place, gradient buffer
                reused, W updated in place) and the batch-source protocol
``layers``      affine, ReLU and softmax-on-scores forward/backward (CS231n)
``net``         :class:`TwoLayerNet`: the CS231n two-layer net on the net backends
``spiral``      the spiral case study: linear vs two-layer net, with pictures
``net_exercise`` the two-layer net on CIFAR-10: check, tune, draw (``fastsoftmax net``)
``data``        CIFAR-10 reading and the CS231n splits; the spiral data set
``gradcheck``   numerical gradients and relative errors, as in the exercise
``tuning``      grid search over learning rate and regularisation
``visualize``   learned templates, loss curves and heat maps as PNGs
``exercise``    the whole exercise as one command (``fastsoftmax train``)

Modules load on first use, so importing the package costs nothing until a
tool is needed.
"""

from .classifier import Softmax
from .net import TwoLayerNet

__all__ = ["Softmax", "TwoLayerNet"]
