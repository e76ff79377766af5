"""Small experiments around the deformable ops (Scaled-MNIST, sampling-location pictures)."""
