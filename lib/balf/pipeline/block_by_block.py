"""Block-by-block calibration: one block's statistics at a time, on inputs from compressed blocks.

Whole-model calibration (the default) runs the calibration data through the model once and keeps
every layer's Gram matrix at once; its memory grows with the model (a 7B language model needs
≈ 70 GB of statistics), and every layer is calibrated on the *original* model's activations.
:class:`BlockByBlock` calibrates a chain of blocks (decoder or encoder layers, ResNet stages,
MobileNetV2's inverted residuals; see :mod:`balf.calibration.block_inputs`) one block at a time:

1. **Allocation pass** (original model, once per :class:`balf.Compressor`). The first block's
   inputs are captured for every calibration batch; then each block in turn gets its layers'
   statistics from forward hooks while it runs on the previous block's outputs, its layers are
   decomposed, only their energy curves ``e_l(r)`` (``(R,)`` floats) and costs are kept, and its
   statistics and decompositions are freed. These are exactly the whole-model statistics, so the
   allocator sees the same candidates and chooses the **same ranks** as whole-model calibration:
   the global budget is met exactly as there.
2. **Propagation pass** (once per config). The layers before the first block are factorized
   (their statistics are the whole-model ones), the first block's inputs are captured again on
   that model, and then for each block: statistics on its inputs (which come from the blocks
   already compressed), decomposition, factorization at the ranks of step 1, then the compressed
   block runs on its inputs to give the next block's. Layers after the last block are calibrated
   on the last compressed block's outputs (:func:`balf.calibration.block_inputs.run_tail`).

So ranks come from the original model's spectra (a global allocation must see every layer before
compressing the first), while the factors whiten the activations the compressed model really
produces, as at inference: each layer minimises ``‖X'W − X'Ŵ‖`` on its propagated inputs ``X'``
(the method's per-layer problem on those inputs; it does not regress onto the original model's
outputs ``XW``). Within a block every layer sees the block's (propagated) input and its uncompressed
siblings, as one forward pass of the block gives them.

Memory: the model's weights, the hidden states of every calibration batch at one block boundary
twice (the block's inputs and outputs, on ``activation_device``; e.g. 32 × 512 tokens × 2048 ×
4 bytes = 134 MB each), one block's Gram matrices and decompositions, and the energy curves.
Time: about two block forward passes of statistics plus one of the compressed blocks, against one
for whole-model calibration, and two rounds of decompositions.

Data-free configs (``activation_aware=False``) have nothing to calibrate and run as usual.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from balf.errors import BALFError
from balf.pipeline.block_runner import BlockRunner
from balf.pipeline.context import CompressionContext
from balf.pipeline.strategy import CalibrationStrategy, refuse_one_shot_data

__all__ = ["BlockByBlock"]


@dataclass(frozen=True)
class BlockByBlock(CalibrationStrategy):
    """Calibrate a chain of blocks one at a time (see the module docstring for the method).

    Pass it as ``strategy=`` to :func:`balf.compress` or :class:`balf.Compressor`.

    Args:
        blocks: module names of the blocks, in the order the forward pass calls them (e.g.
            ``["layer1", "layer2", "layer3", "layer4"]`` for a torchvision ResNet); each is
            called once per forward pass and takes the previous block's output as its first
            positional argument. ``None``: the children of the ``nn.ModuleList`` (or
            ``nn.Sequential``) that holds most of the chosen layers' weights (a transformer's
            ``layers``, MobileNetV2's ``features``), see
            :func:`balf.pipeline.block_runner.find_blocks`.
        activation_device: where the hidden states at a block boundary are kept between blocks
            (``"cpu"`` by default; ``None``: the model's device).
        decomposition_device: where one block's statistics are decomposed (``None``: where they
            were collected, the model's device).

    Language models: calibrate without a key/value cache, e.g.
    ``forward=lambda model, batch: model(**batch, use_cache=False)``.

    Example:
        >>> small, report = balf.compress(model, batches, balf.BALFConfig(0.6),
        ...                               strategy=balf.BlockByBlock())
    """

    uses_cache: ClassVar[bool] = False
    blocks: Sequence[str] | None = None
    activation_device: str | None = "cpu"
    decomposition_device: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.blocks, str):
            raise BALFError(
                f"blocks must be a list of module names, got the string {self.blocks!r}"
            )
        if self.blocks is not None:
            object.__setattr__(self, "blocks", tuple(self.blocks))
            if len(self.blocks) == 0:
                raise BALFError("blocks is empty: name at least one block, or pass None")

    def to_dict(self) -> dict[str, Any]:
        """``{"type": "BlockByBlock", ...}``, JSON-serialisable."""
        return {
            "type": type(self).__name__,
            "blocks": list(self.blocks) if self.blocks is not None else None,
            "activation_device": self.activation_device,
            "decomposition_device": self.decomposition_device,
        }

    def check(self, context: CompressionContext) -> None:
        refuse_one_shot_data(context, "block-by-block calibration")

    def runner(self, context: CompressionContext) -> BlockRunner:
        """The object that runs this strategy on ``context`` (keeps the allocation pass)."""
        return BlockRunner(self, context)
