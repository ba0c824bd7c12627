"""Model Folding (Wang, Šikić, Thiele, Saukh; ICLR 2025): a data-free structured baseline.

Channels that index the same activations (a *channel group*) are clustered by their weights
with Hartigan's k-means and every cluster is merged into one channel, so the network becomes
genuinely narrower; no data and no fine-tuning (except the optional ``"r"`` repair, which
re-estimates BatchNorm statistics).

Example:
    >>> from balf_paper.folding import fold_model
    >>> small = fold_model(model, keep=0.7, repair="ar")  # ~49% of the parameters
"""

from balf_paper.folding.config import FOLDING_MODES, FoldingConfig
from balf_paper.folding.features import channel_features, cluster_count
from balf_paper.folding.fold import REPAIRS, fold_model, fold_with_labels, kept_channels
from balf_paper.folding.groups import SUPPORTED_MODELS, ChannelGroup, Producer, channel_groups
from balf_paper.folding.kmeans import KMeansResult, hartigan_kmeans, inertia
from balf_paper.folding.repair import ar_scale

__all__ = [
    "FOLDING_MODES",
    "REPAIRS",
    "SUPPORTED_MODELS",
    "ChannelGroup",
    "FoldingConfig",
    "KMeansResult",
    "Producer",
    "ar_scale",
    "channel_features",
    "channel_groups",
    "cluster_count",
    "fold_model",
    "fold_with_labels",
    "hartigan_kmeans",
    "inertia",
    "kept_channels",
]
