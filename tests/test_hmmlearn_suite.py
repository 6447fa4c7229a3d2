"""hmmlearn's own tests of the models elbokit shares (GaussianHMM, CategoricalHMM, PoissonHMM,
GMMHMM), run against elbokit through the thin adapter in ``tests/hmmlearn_adapter.py``.

The test files come from hmmlearn's wheel (``hmmlearn/tests/``) and run unchanged except
for their imports (the adapter instead of ``hmmlearn.hmm``) and one edit: their
``implementation`` parametrisation ("scaling", "log") keeps "log" only, since elbokit
has no such switch (it picks scaled or log-space recursions itself) and the two runs
would be the same test twice; hmmlearn's "scaling" expectation that an underflowing fit
raises is therefore not run (elbokit fits that data).  Not run: hmmlearn's tests of its
own machinery (``test_base.py``: its convergence monitor and C recursions, whose
Wikipedia example elbokit tests in tests/models/test_hmm.py), of models elbokit does not
offer (MultinomialHMM, the variational HMMs), the legacy ``test_gmm_hmm.py`` (marked xfail
upstream) and ``test_gmm_hmm_multisequence.py`` (hmmlearn's monitor class).

Marked here (each checked by hand, see the README's list of differences):

* ``test_criterion`` is skipped: it fits 500-iteration models to one 2,000-step
  sequence (minutes here) and asserts ``np.all(aic) > 0``, which holds for any AIC;
  elbokit's own tests check BIC/AIC against their formula.
* ``test_fit_with_priors`` (tied, full) is an expected failure: it needs the
  log-likelihood to still rise during 20 single iterations after the initialisation;
  elbokit starts from the k-means states with their own covariances, where EM on this
  well-separated data is at its fixed point after one step (hmmlearn, which starts
  every state at the covariance of all the data, gets there a few steps later: the same
  states and log-likelihood up to its covars_prior).
"""

import functools

import importlib.util
import random
import re
import sys
import types
from pathlib import Path

import numpy as np
import pytest

_NUMPY_ERRORS = np.geterr()  # restored below: hmmlearn/tests/__init__.py sets np.seterr(all="warn")

pytest.importorskip("hmmlearn")


@pytest.fixture(autouse=True)
def _seeded():
    """hmmlearn's conftest seeds NumPy's global generator (with a random seed); here a fixed one.

    hmmlearn's tests run under the floating-point error state its package sets
    (``np.seterr(all="warn")``), for these tests only.
    """
    np.random.seed(0)
    random.seed(0)
    with np.errstate(all="warn"):
        yield

SUITES = ["test_gaussian_hmm", "test_categorical_hmm", "test_poisson_hmm", "test_gmm_hmm_new"]
ADAPTER = "tests.hmmlearn_adapter"


def _load(name):
    folder = Path(importlib.util.find_spec("hmmlearn.tests").origin).parent
    source = (folder / f"{name}.py").read_text()
    source = source.replace("from .. import hmm", f"from {ADAPTER} import hmm_module as hmm")
    source = source.replace("from hmmlearn import hmm", f"from {ADAPTER} import hmm_module as hmm")
    source = source.replace("from ..hmm import GMMHMM", f"from {ADAPTER} import GMMHMM")
    source = source.replace("from .test_gmm_hmm import", "from hmmlearn.tests.test_gmm_hmm import")
    source = re.sub(r"from \. import", "from hmmlearn.tests import", source)
    source = source.replace('["scaling", "log"]', '["log"]')
    module = types.ModuleType(f"tests.hmmlearn_suite.{name}")
    module.__file__ = str(folder / f"{name}.py")
    sys.modules[module.__name__] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


MARKS = {
    "test_criterion": pytest.mark.skip(reason="asserts only np.all(aic) > 0; minutes of fitting"),
    ("GaussianHMMWithTiedCovars", "test_fit_with_priors"): pytest.mark.xfail(
        reason="EM is at its fixed point one step after elbokit's initialisation", strict=True),
    ("GaussianHMMWithFullCovars", "test_fit_with_priors"): pytest.mark.xfail(
        reason="EM is at its fixed point one step after elbokit's initialisation", strict=True),
}


def _marked(cls):
    for key, mark in MARKS.items():
        name = key if isinstance(key, str) else key[1]
        if (isinstance(key, str) or cls.__name__.endswith(key[0])) and hasattr(cls, name):
            method = getattr(cls, name)

            @functools.wraps(method)
            def copy(*args, _method=method, **kwargs):
                return _method(*args, **kwargs)
            copy.pytestmark = list(getattr(method, "pytestmark", [])) + [mark]
            setattr(cls, name, copy)
    return cls


for _name in SUITES:
    _module = _load(_name)
    for _attr, _obj in vars(_module).items():
        if _attr.startswith("Test") and isinstance(_obj, type):
            globals()[f"Test_{_name[5:]}_{_attr[4:]}"] = _marked(
                type(_attr, (_obj,), {"__module__": __name__}))

# hmmlearn/tests/__init__.py turned every numpy floating-point event (underflow included) into
# a warning for the whole session, which pytest then raises in unrelated tests
np.seterr(**_NUMPY_ERRORS)


def test_hmmlearns_suites_were_loaded_against_elbokit():
    """Each of hmmlearn's four test modules gave test classes here, built on elbokit's models."""
    import elbokit
    from tests.hmmlearn_adapter import hmm_module

    classes = {name: obj for name, obj in globals().items()
               if name.startswith("Test_") and isinstance(obj, type)}
    for suite in SUITES:
        assert any(name.startswith(f"Test_{suite[5:]}_") for name in classes), suite
    assert issubclass(hmm_module.GaussianHMM, elbokit.GaussianHMM)
    assert issubclass(hmm_module.CategoricalHMM, elbokit.CategoricalHMM)
    assert issubclass(hmm_module.PoissonHMM, elbokit.PoissonHMM)
