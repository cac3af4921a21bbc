"""sao: sparse-from-scratch deep networks with Sparsity-Aware Orthogonal initialization.

Esguerra, Nasir, Tang, Tumian & Ho, "Sparsity-Aware Orthogonal Initialization of Deep
Neural Networks", IEEE Access 11 (2023).
"""

from sao import init, methods, models, nn, spectral, topology
from sao.methods import sparsify

__version__ = "0.1.0"

__all__ = ["__version__", "init", "methods", "models", "nn", "sparsify", "spectral", "topology"]
