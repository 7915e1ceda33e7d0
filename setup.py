import os
import sys

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """Build the C++ extension when possible; otherwise warn once and install without it."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler, bad toolchain: the pure-Python fallback is used
            self._skip(exc)

    def build_extension(self, ext):
        args = ["/std:c++17", "/O2"] if self.compiler.compiler_type == "msvc" else ["-std=c++17", "-O3"]
        ext.extra_compile_args = args
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._failed = getattr(self, "_failed", set()) | {ext.name}
            self._skip(exc)

    def copy_extensions_to_source(self):  # editable installs: copy only what was built
        saved = self.extensions
        self.extensions = [e for e in saved if e.name not in getattr(self, "_failed", set())]
        try:
            super().copy_extensions_to_source()
        finally:
            self.extensions = saved

    def get_outputs(self):
        # Only report what was actually built, so editable/wheel installs don't look for a missing file.
        return [p for p in super().get_outputs() if os.path.exists(p)]

    def get_output_mapping(self):
        mapping = super().get_output_mapping()
        return {k: v for k, v in mapping.items() if os.path.exists(v)}

    def _skip(self, exc):
        if getattr(self, "_warned", False):
            return
        self._warned = True
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"WARNING: sift_fast._C not built ({first}); using the pure-Python fallback", file=sys.stderr)


ext_modules = []
if os.environ.get("SIFT_FAST_NO_EXT", "") not in ("", "0"):
    print("SIFT_FAST_NO_EXT set: skipping the sift_fast._C extension", file=sys.stderr)
else:
    ext_modules = [Extension("sift_fast._C", sources=["csrc/data_index.cpp"], language="c++")]

# kernels/ lives at the top level (Triton kernels never import the trainer) and is
# installed as the subpackage sift_fast.kernels.
packages = find_packages(include=["sift_fast", "sift_fast.*"]) + ["sift_fast.kernels"]
setup(
    packages=packages,
    package_dir={"sift_fast.kernels": "kernels"},
    package_data={"sift_fast.data": ["bundled/*"]},
    ext_modules=ext_modules,
    cmdclass={"build_ext": OptionalBuildExt},
)
