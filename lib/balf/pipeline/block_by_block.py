"""Block-by-block calibration: one block's statistics at a time, on inputs from compressed blocks.

Whole-model calibration (the default) runs the calibration data through the model once and keeps
every layer's Gram matrix at once; its memory grows with the model (a 7B language model needs
≈ 70 GB of statistics), and every layer is calibrated on the *original* model's activations.
:class:`BlockByBlock` calibrates a chain of blocks (decoder or encoder layers, ResNet stages,
MobileNetV2's inverted residuals; see :mod:`balf.calibration.chain`) one block at a time. One
forward pass on one batch first sorts the chosen layers by where they are called: before the
first block, inside one block, after the last block, or in several places (a module shared by two
blocks, a projection used before and after the chain).

1. **Allocation pass** (original model, once per :class:`balf.Compressor`). One forward pass over
   the calibration data records every block's arguments (:mod:`balf.calibration.block_inputs`:
   each block its own masks and position embeddings, what it takes from the previous block's
   output marked as carried) and collects the statistics of the layers outside the blocks; then
   each block in turn gets its layers' statistics from forward hooks while it runs on the previous
   block's outputs, only its layers' energy curves ``e_l(r)`` (``(R,)`` floats, from the
   eigenvalues alone: :func:`balf.decomposition.layer_energies`) and costs are kept, and its
   statistics are freed; the layers installed first (below) and, without a refit, the first
   block's layers are decomposed instead, and their decompositions kept on the CPU. These are
   exactly the whole-model statistics (their energy curves equal to the eigensolver's rounding,
   within 1e-5 where the spectral step runs in float32), so the allocator sees the same
   candidates and chooses the **same ranks** as whole-model calibration: the global budget is
   met exactly as there.
2. **Propagation pass** (once per config). The layers before the first block and those called in
   several places are factorized first (with their whole-model statistics), every block's
   arguments are recorded again on that model, and then for each block: statistics on its inputs
   (which come from the blocks already compressed), decomposition, factorization at the ranks of
   step 1, then the compressed block runs to give the next block's inputs. (Reusing step 1's
   decompositions for the first block, whose inputs are the same when nothing before it is
   replaced, is implemented but off: it costs one block of float64 decompositions held on the
   CPU for a saving within measurement noise; ``BlockRunner._reuse_first_block``.) Layers after
   the last block are calibrated on one forward pass of the compressed model (a head that reads
   earlier blocks' outputs, or the batch, sees what it reads).

So ranks come from the original model's spectra (a global allocation must see every layer before
compressing the first), while the factors whiten the activations the compressed model really
produces, as at inference: each layer minimises ``‖X'W − X'Ŵ‖`` on its propagated inputs ``X'``
(the method's per-layer problem on those inputs; it does not regress onto the original model's
outputs ``XW``). Within a block every layer sees the block's (propagated) input and its uncompressed
siblings, as one forward pass of the block gives them. Arguments a block takes from elsewhere than
the previous block's output (masks, position embeddings, an encoder's output) are those of the
recording pass, on the model with the layers before the chain already factorized.

Memory: the model's weights; the recorded arguments of every block for every calibration batch
(each distinct tensor once per batch: a mask or position embeddings shared by the blocks once) and
the carried outputs at one block boundary, on ``activation_device`` (e.g. 32 × 512 tokens × 2048
× 4 bytes = 134 MB of hidden states); one block's Gram matrices and decompositions; the energy
curves. Time: per pass one forward pass of the model (the propagation pass's stops at the last
block) plus about two block forward passes of statistics and one of the compressed blocks, and
one more forward pass for the layers after the chain; one round of eigenvalues (the allocation
pass) and one of decompositions.

**Anchored refit** (``BlockByBlock(refit=balf.AnchoredRefit(beta, ridge, ...))``, see
:mod:`balf.pipeline.block_refit`): the propagation pass also carries the dense model's hidden
states, runs each uncompressed block on both, and fits every member layer whose calibration rows
determine it to the blend ``(1 − β)·X'W + β·XW`` of targets (:mod:`balf.refit`); the others, the
layers before the chain (where ``X' = X``) and those after it keep the fit above, and the report
says why. Memory: the paired statistics of one block and two sets of hidden states; time: one more
block forward pass per block, and a forward pass to the first block when a layer before the chain
is factorized.

Data-free configs (``activation_aware=False``) have nothing to calibrate and run as usual.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from balf.errors import BALFError
from balf.pipeline.block_runner import BlockRunner
from balf.pipeline.context import CompressionContext
from balf.pipeline.strategy import CalibrationStrategy, refuse_one_shot_data
from balf.refit import AnchoredRefit

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
        refit: fit each block's layers on their propagated inputs towards a blend of the
            dense model's outputs (:class:`balf.AnchoredRefit`: β, ridge, bias correction, rows
            guard); ``None`` (the default): each layer's own problem on its propagated inputs.

    Language models: calibrate without a key/value cache, e.g.
    ``forward=lambda model, batch: model(**batch, use_cache=False)``.

    Example:
        >>> small, report = balf.compress(model, batches, balf.BALFConfig(0.6),
        ...                               strategy=balf.BlockByBlock())
        >>> strategy = balf.BlockByBlock(refit=balf.AnchoredRefit(beta=1.0))
        >>> small, report = balf.compress(model, batches, balf.BALFConfig(0.6), strategy=strategy)
        >>> report.strategy["layers"]["layers.3.mlp.down_proj"]["refit"]
        True
    """

    uses_cache: ClassVar[bool] = False
    blocks: Sequence[str] | None = None
    activation_device: str | None = "cpu"
    decomposition_device: str | None = None
    refit: AnchoredRefit | None = None

    def __post_init__(self) -> None:
        if self.refit is not None and not isinstance(self.refit, AnchoredRefit):
            raise BALFError(f"refit must be a balf.AnchoredRefit or None, got {self.refit!r}")
        if isinstance(self.blocks, str):
            raise BALFError(
                f"blocks must be a list of module names, got the string {self.blocks!r}"
            )
        if self.blocks is not None:
            object.__setattr__(self, "blocks", tuple(self.blocks))
            if len(self.blocks) == 0:
                raise BALFError("blocks is empty: name at least one block, or pass None")

    def to_dict(self) -> dict[str, Any]:
        """``{"type": "BlockByBlock", ...}``, JSON-serialisable (``"refit"`` only when set)."""
        out = {
            "type": type(self).__name__,
            "blocks": list(self.blocks) if self.blocks is not None else None,
            "activation_device": self.activation_device,
            "decomposition_device": self.decomposition_device,
        }
        if self.refit is not None:
            out["refit"] = self.refit.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BlockByBlock:
        """The strategy :meth:`to_dict` describes (a report's ``strategy`` too: the entries a
        compression adds, ``"layers"``, are left out).

        Raises:
            BALFError: the dict describes another strategy.
        """
        if data.get("type", cls.__name__) != cls.__name__:
            raise BALFError(f"not a BlockByBlock description: type {data.get('type')!r}")
        refit = data.get("refit")
        return cls(
            blocks=data.get("blocks"),
            activation_device=data.get("activation_device", "cpu"),
            decomposition_device=data.get("decomposition_device"),
            refit=AnchoredRefit.from_dict(refit) if refit is not None else None,
        )

    def check(self, context: CompressionContext) -> None:
        refuse_one_shot_data(context, "block-by-block calibration")

    def runner(self, context: CompressionContext) -> BlockRunner:
        """The object that runs this strategy on ``context`` (keeps the allocation pass)."""
        return BlockRunner(self, context)
