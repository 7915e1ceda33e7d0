"""Triton kernels for SIFT scoring (installed as ``sift_fast.kernels``; never imports the trainer).

* ``exit_scorer``: fused early-exit scorer (decoder matmul + online softmax statistics + per-sequence mean),
  with its pure-PyTorch reference ``exit_scorer_ref``.
* ``topk``: deterministic top-k sequence selection (single-program Triton sort), reference ``topk_ref``.

Kernels are jitted at first launch, so ``TRITON_INTERPRET`` (the CPU interpreter) is read at call time.
"""

import sys as _sys

if __name__ == "kernels":
    # The repo root is on sys.path (``python -m pytest``, a bench script, a shell in the checkout) and
    # something asked for the top-level ``kernels``: that is Hugging Face's hub-kernels package (a hard
    # dependency of transformers >= 5.2x, imported by ``transformers.integrations.hub_kernels``), not this
    # directory, which is only ever ``sift_fast.kernels``. Hand the import to the installed one if there is one.
    import importlib.machinery as _machinery
    import importlib.util as _util
    import os as _os

    _here = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
    _rest = [p for p in _sys.path if _os.path.abspath(p or ".") != _here]
    _spec = _machinery.PathFinder.find_spec("kernels", _rest)
    if _spec is not None and _spec.loader is not None:
        _mod = _util.module_from_spec(_spec)
        _sys.modules["kernels"] = _mod  # what ``import kernels`` returns
        _spec.loader.exec_module(_mod)
