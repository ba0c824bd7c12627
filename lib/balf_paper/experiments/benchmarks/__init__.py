"""Benchmarks of the experiments: compression time and memory, inference speed.

:mod:`.compression_time` and :mod:`.speed` measure, :mod:`.speed_plot` draws and tabulates
from the stored JSON, :mod:`.render` re-renders the committed studies' figures and the
``*_cli`` modules are the scripts' ``main``. :mod:`.memory` and :mod:`.timing` are shared.
"""
