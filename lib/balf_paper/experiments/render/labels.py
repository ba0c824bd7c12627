"""How results name their dataset, and which other works' rows may be drawn beside them.

Results on a re-published copy of a dataset are labelled as such everywhere (figure titles,
table captions, README lines) and never mixed with results on the original release: CIFAR-10 as
republished in JPEG form is the dataset ``cifar10-jpeg``, shown as "CIFAR-10 (JPEG release)".
Other works report on the original release; their points may be overlaid on a JPEG-release figure
only with a legend that says so.
"""

from __future__ import annotations

__all__ = ["DATASET_LABELS", "OTHER_WORKS_SOURCE", "dataset_label", "other_works_source"]

#: Display names where the folder name alone could mislead (others are shown as named).
DATASET_LABELS: dict[str, str] = {
    "cifar10-jpeg": "CIFAR-10 (JPEG release)",
    "imagenet-samples": "ImageNet samples (1,300 val / 1,000 train images)",
}

#: dataset -> (dataset of the other works' rows to overlay, how the legend names that release).
OTHER_WORKS_SOURCE: dict[str, tuple[str, str]] = {"cifar10-jpeg": ("cifar10", "original CIFAR-10")}

#: our model name -> the model name other works report (third-party option-A ResNets).
_OTHER_WORKS_MODEL = {"resnet20a": "resnet20", "resnet56a": "resnet56"}


def dataset_label(dataset: str) -> str:
    """How figures, tables and logs name ``dataset`` (e.g. "CIFAR-10 (JPEG release)")."""
    return DATASET_LABELS.get(dataset, dataset)


def other_works_source(dataset: str, model: str) -> tuple[str, str, str | None]:
    """``(dataset, model, release note)`` of the other works' rows to draw beside our results.

    The note is ``None`` when the rows are on the same data as ours, else a phrase such as
    ``"original CIFAR-10"`` for the legend.
    """
    works_dataset, note = OTHER_WORKS_SOURCE.get(dataset, (dataset, None))
    return works_dataset, _OTHER_WORKS_MODEL.get(model, model), note
