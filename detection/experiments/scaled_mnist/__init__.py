"""Scaled-MNIST: digit classification under scale changes, with and without deformable convs."""
