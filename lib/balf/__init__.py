"""balf: Budgeted Activation-aware Low-rank Factorization (arXiv:2509.25136)."""

__version__ = "0.1.0"
