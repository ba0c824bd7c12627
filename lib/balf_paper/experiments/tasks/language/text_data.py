"""Text data of the language experiments, read from local files (no download).

* WikiText-2 raw test split (``wiki.test.raw``): tokenized once as one text; evaluation windows
  are the first ``n`` contiguous non-overlapping windows of the text, calibration windows are
  contiguous windows starting at the middle of the token stream, so the two never overlap.
* STS Benchmark (``sts-{train,test}.csv``, tab-separated; score in column 5, sentences in 6 and 7).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from balf.errors import BALFError, DatasetNotFoundError

__all__ = ["StsPairs", "read_sts", "read_wikitext", "split_windows"]

WIKITEXT_SOURCE = (
    "the WikiText-2 raw test split (wiki.test.raw, e.g. Hugging Face wikitext/wikitext-2-raw-v1 "
    "test, or ../shared/data/wikitext-2-raw/)"
)
STS_SOURCE = (
    "the STS Benchmark CSV files sts-train.csv and sts-test.csv (stsbenchmark.tar.gz of "
    "ixa2.si.ehu.eus/stswiki, or ../shared/data/stsbenchmark/)"
)


def read_wikitext(folder: str | Path) -> str:
    """The text of ``folder/wiki.test.raw``.

    Raises:
        DatasetNotFoundError: the file is missing (the message says what to place there).
    """
    path = Path(folder) / "wiki.test.raw"
    if not path.is_file():
        raise DatasetNotFoundError(f"{path} not found: place {WIKITEXT_SOURCE} there")
    return path.read_text(encoding="utf-8")


def split_windows(
    ids: Tensor, calib_windows: int, calib_len: int, eval_windows: int, eval_len: int
) -> tuple[Tensor, Tensor]:
    """Calibration and evaluation windows of a token stream ``ids`` ``(N,)``.

    Returns:
        ``(calibration (calib_windows, calib_len), evaluation (eval_windows, eval_len))``:
        evaluation from token 0, calibration from token ``N // 2`` (disjoint parts).

    Raises:
        BALFError: the text is too short for the windows asked.
    """
    n = ids.numel()
    half = n // 2
    if eval_windows * eval_len > half or calib_windows * calib_len > n - half:
        raise BALFError(
            f"the text has {n} tokens: too few for {eval_windows}×{eval_len} evaluation tokens "
            f"in its first half and {calib_windows}×{calib_len} calibration tokens in its second"
        )
    evaluation = ids[: eval_windows * eval_len].reshape(eval_windows, eval_len)
    calibration = ids[half : half + calib_windows * calib_len].reshape(calib_windows, calib_len)
    return calibration.clone(), evaluation.clone()


@dataclass(frozen=True)
class StsPairs:
    """Sentence pairs with their gold similarity (0–5)."""

    first: list[str]
    second: list[str]
    scores: list[float]


def read_sts(folder: str | Path, split: str) -> StsPairs:
    """The pairs of ``folder/sts-<split>.csv`` (columns 5–7: score, sentence 1, sentence 2).

    Raises:
        DatasetNotFoundError: the file is missing.
    """
    path = Path(folder) / f"sts-{split}.csv"
    if not path.is_file():
        raise DatasetNotFoundError(f"{path} not found: place {STS_SOURCE} there")
    first, second, scores = [], [], []
    with path.open(encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) < 7:
                continue
            scores.append(float(row[4]))
            first.append(row[5])
            second.append(row[6])
    if not scores:
        raise BALFError(f"{path} holds no sentence pair (expected tab-separated STS-B rows)")
    return StsPairs(first, second, scores)
