"""``fcnkit data check``: verify every sample of a dataset and report all problems at once.

For each sample: its files exist, decode, image and label have the same size, and every label
value is a class index or ignore. Index-level problems (files missing for listed ids, masks
without images, 0/255 binary masks) come first. Nothing stops at the first problem.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from fcnkit.data.base import DatasetError, SplitUnavailable, as_segmentation_dataset
from fcnkit.data.registry import create_dataset, get_dataset_entry


@dataclass
class CheckReport:
    """The outcome of checking one split: ``problems`` name files and expectations."""

    name: str
    split: str
    total: int = 0
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    skipped: str | None = None  # why the split could not be checked (split list absent)
    notes: list[str] = field(default_factory=list)  # the dataset's notes (not problems)

    @property
    def ok(self) -> bool:
        return self.skipped is None and not self.problems


def sample_indices(n: int, limit: int | None) -> list[int]:
    """All of ``range(n)``, or ``limit`` indices spread evenly over it (deterministic)."""
    if limit is None or limit >= n:
        return list(range(n))
    if limit <= 0:
        return []
    return sorted({round(k * (n - 1) / max(1, limit - 1)) for k in range(limit)})


def check_dataset(
    dataset: Dataset,
    name: str = "dataset",
    split: str = "",
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CheckReport:
    """Check every sample (or ``limit`` evenly spread samples) of a built dataset."""
    ds = as_segmentation_dataset(dataset)
    report = CheckReport(name, split, total=len(ds))
    report.problems.extend(ds.index_problems)
    report.notes.extend(ds.notes)
    indices = sample_indices(report.total, limit)
    for k, i in enumerate(indices):
        if progress is not None:
            progress(k, len(indices))
        report.checked += 1
        if any(not p.is_file() for p in ds.files(i).values()):
            continue  # already listed among the index problems
        try:
            sample = ds.load(i)
            ds.check_sample(sample, i)
        except DatasetError as err:
            report.problems.append(str(err))
        except Exception as err:  # an unexpected failure still names the sample
            report.problems.append(f"{ds.describe_sample(i)}: {err!r}")
    return report


def check(
    name: str,
    root: str | Path | None,
    splits: Iterable[str] | None = None,
    options: dict[str, Any] | None = None,
    limit: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[CheckReport]:
    """Check the named dataset: the given splits, or every split it has.

    With no splits given, a split whose list is absent under ``root`` is reported as skipped;
    it is a problem when it was asked for by name or when no split at all could be checked.
    """
    entry = get_dataset_entry(name)
    explicit = splits is not None
    reports = []
    for split in list(splits) if explicit else list(entry.splits):
        opts = dict(options or {})
        try:
            dataset = create_dataset(name, root, split, strict=False, **opts)
        except TypeError:
            dataset = create_dataset(name, root, split, **opts)  # datasets without `strict`
        except SplitUnavailable as err:
            report = CheckReport(name, split)
            if explicit:
                report.problems.append(str(err))
            else:
                report.skipped = str(err)
            reports.append(report)
            continue
        except DatasetError as err:
            reports.append(CheckReport(name, split, problems=[str(err)]))
            continue
        reports.append(check_dataset(dataset, name, split, limit, progress))
    if reports and all(r.skipped for r in reports):
        reports[0].problems.append(
            f"no split of {name!r} could be found under {root}: "
            + "; ".join(r.skipped or "" for r in reports)
        )
        reports[0].skipped = None
    return reports
