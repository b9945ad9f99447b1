"""Train a softmax classifier on CIFAR-10 with the fastest backend, step by step.

    python examples/train_cifar10.py [CIFAR_DIR] [OUT_DIR]

CIFAR_DIR defaults to the shared real subset beside the repository
(../shared/cifar-10-subset/cifar-10-batches-py); get the full dataset with
``fastsoftmax.training.data.download_cifar10(dest)``.  The whole exercise with every
figure (sanity loss, gradient check, naive vs fast timing, tuning) is
``fastsoftmax train --data CIFAR_DIR``.
"""

import os
import sys

import fastsoftmax
from fastsoftmax.training.data import get_cifar10_data
from fastsoftmax.training.visualize import plot_loss, plot_weights

here = os.path.dirname(os.path.abspath(__file__))
root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "..", "shared", "cifar-10-subset",
                                                          "cifar-10-batches-py")
out = sys.argv[2] if len(sys.argv) > 2 else "."
os.makedirs(out, exist_ok=True)

# Mean-subtracted images with a bias column (pass dtype=np.float32 to halve the memory).
data = get_cifar10_data(root, num_training=None, num_validation=500, num_test=None)
print(f"{len(data.y_train)} training images, fastest backend: {fastsoftmax.fastest()}")

model = fastsoftmax.Softmax(seed=0)  # backend=None: the fastest one here
history = model.train(data.X_train, data.y_train, learning_rate=1e-6, reg=5e3, num_iters=600, progress=True)
print(f"validation accuracy {model.score(data.X_val, data.y_val):.3f}, "
      f"test accuracy {model.score(data.X_test, data.y_test):.3f}")

model.class_names, model.mean_image = data.class_names, data.mean_image
model.save(os.path.join(out, "softmax.npz"))
plot_weights(model.W, os.path.join(out, "weights.png"), data.class_names)
plot_loss(history, os.path.join(out, "loss.png"))
print(f"wrote softmax.npz, weights.png and loss.png to {out}")
