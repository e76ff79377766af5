"""Train a Scaled-MNIST classifier with or without deformable convs.

Real MNIST is used when datasets/mnist/ holds it (or torchvision can download it); else the
synthetic digits (--data synthetic forces them). Example (DCNv2):
    python tools/train_scaled_mnist.py --arch ScaledMNISTNet --deform True --modulation True \
        --epochs 3 --train-size 10000 --test-size 2000 --threads 1 --out work_space/scaled_mnist/dcnv2

See detection/experiments/scaled_mnist/train.py for the protocol and docs/scaled_mnist.md for results.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detection.experiments.scaled_mnist.train import cli  # noqa: E402

if __name__ == "__main__":
    status = cli()
    if status:  # run as a script or through runpy, success returns normally
        sys.exit(status)
