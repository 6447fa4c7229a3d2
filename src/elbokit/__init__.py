"""elbokit: latent variable models on PyTorch.

Every model is a joint p(x, z) = p(x | z) p(z), fitted by maximising
log p(x) = ELBO(q) + KL(q(z) || p(z | x)): by EM where the posterior is
tractable, by variational inference where it is not, or by Monte Carlo.
"""

__version__ = "0.1.0"

from elbokit.autoencoder import VAE
from elbokit.bayesian_mixture import BayesianGaussianMixture
from elbokit.data.text import Corpus
from elbokit.factor_analysis import PPCA, FactorAnalysis
from elbokit.general_mixture import Mixture
from elbokit.hmm import GMMHMM, HMM, CategoricalHMM, GaussianHMM, PoissonHMM
from elbokit.inference.em import ConvergenceWarning
from elbokit.io import ModelFormatError, load
from elbokit.mixture import GaussianMixture
from elbokit.selection import Selection, select
from elbokit.models.gaussian_mixture import DegenerateComponentWarning, DegenerateCovarianceError
from elbokit.topics import LDA

__all__ = [
    "CategoricalHMM",
    "BayesianGaussianMixture",
    "ConvergenceWarning",
    "Corpus",
    "DegenerateComponentWarning",
    "DegenerateCovarianceError",
    "FactorAnalysis",
    "GMMHMM",
    "GaussianHMM",
    "GaussianMixture",
    "HMM",
    "LDA",
    "Mixture",
    "ModelFormatError",
    "PPCA",
    "PoissonHMM",
    "Selection",
    "VAE",
    "load",
    "select",
    "__version__",
]
