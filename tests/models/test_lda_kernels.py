"""The compiled LDA kernels are module-level functions in numba's disk cache."""

import pytest

numba = pytest.importorskip("numba")

from elbokit.models import lda_kernels  # noqa: E402

KERNELS = [name for name, obj in vars(lda_kernels).items()
           if isinstance(obj, numba.core.registry.CPUDispatcher)]


def test_every_kernel_is_found():
    assert {"sweep", "gamma_block", "local", "word_stats", "digamma", "uniform"} <= set(KERNELS)


@pytest.mark.parametrize("name", KERNELS)
def test_kernel_is_module_level_and_disk_cached(name):
    # a kernel defined in a function (a closure) that calls another closure misses the
    # cache and is compiled again in every process
    kernel = getattr(lda_kernels, name)
    assert "<locals>" not in kernel.py_func.__qualname__
    assert type(kernel._cache).__name__ == "FunctionCache"
