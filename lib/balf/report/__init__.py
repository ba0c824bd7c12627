"""The outcome of a compression: :class:`Report` and :class:`LayerReport` (:mod:`.model`), filled
in by :mod:`.build`."""

from balf.report.model import LayerReport, Report

__all__ = ["LayerReport", "Report"]
