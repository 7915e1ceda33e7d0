"""Triton kernels for SIFT scoring (installed as ``sift_fast.kernels``; never imports the trainer).

* ``exit_scorer``: fused early-exit scorer (decoder matmul + online softmax statistics + per-sequence mean),
  with its pure-PyTorch reference ``exit_scorer_ref``.
* ``topk``: deterministic top-k sequence selection (single-program Triton sort), reference ``topk_ref``.

Kernels are jitted at first launch, so ``TRITON_INTERPRET`` (the CPU interpreter) is read at call time.
"""
