"""sift_fast: transformer pretraining with early-exit sample sifting (SIFT)."""

import os

# OpenMP threads that spin while waiting collapse when the CPU is shared: measured here, a proxy-12 step
# on 2 threads took 8x longer (7-10 s instead of 1.2 s) while one other single-threaded job ran. Passive
# waiting removes the collapse. Set before torch is imported; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
