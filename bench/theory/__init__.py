"""Numerical checks of the SIFT paper's theory: greedy vs uniform SGD, early-exit argmax preservation."""
