"""Learning: feature datasets replayed through the real stages, training, conversion to the SNN and
evaluation of accuracy against decision time."""
