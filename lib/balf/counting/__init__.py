"""Counting: FLOPs of a whole model with ``torch.utils.flop_counter`` (:mod:`.flops`), fused
attention kernels counted as the math they do (:mod:`.attention`), and parameters."""
