"""evaluate(): metrics over a DataLoader, multi-head pairing, sharding.

The exact 2-rank evaluation runs in ``test_ddp.py`` (one 2-process launch for everything).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from fcnkit.data import build_transforms, collate_pad, create_dataset
from fcnkit.engine.distributed import ShardSampler
from fcnkit.engine.evaluate import (
    MAIN,
    ExtraMetrics,
    Scoring,
    dataset_scoring,
    evaluate,
    evaluate_confusion,
    evaluate_model,
    make_eval_loader,
    predict_samples,
)
from fcnkit.metrics import ConfusionMatrix
from fcnkit.models.outputs import SINGLE_HEAD
from fcnkit.preprocessing import get_preprocessing


class TinyNet(nn.Module):
    """A small FCN (conv, pool, conv, upsample); optionally a second ("geo") head."""

    def __init__(self, num_classes: int = 7, two_heads: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.score = nn.Conv2d(8, num_classes, 3, padding=1)
        self.geo = nn.Conv2d(8, 3, 1) if two_heads else None
        self.preprocessing = get_preprocessing("caffe-voc")

    def forward(self, x: torch.Tensor):
        y = F.max_pool2d(torch.relu(self.bn(self.conv(x))), 2, ceil_mode=True)
        up = lambda s: F.interpolate(s, size=x.shape[-2:], mode="bilinear", align_corners=False)  # noqa: E731
        sem = up(self.score(y))
        return {"sem": sem, "geo": up(self.geo(y))} if self.geo is not None else sem


class Samples(Dataset):
    """Random uint8 images with labels (some 255); optionally dict labels."""

    def __init__(self, n: int = 5, size: tuple[int, int] = (12, 10), two_heads: bool = False):
        g = torch.Generator().manual_seed(1)
        self.images = torch.randint(0, 256, (n, 3, *size), generator=g, dtype=torch.uint8)
        self.labels = torch.randint(0, 7, (n, *size), generator=g)
        self.labels[:, 0, :3] = 255
        self.geo = torch.randint(0, 3, (n, *size), generator=g)
        self.two_heads = two_heads

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        label = {"sem": self.labels[i], "geo": self.geo[i]} if self.two_heads else self.labels[i]
        return {"image": self.images[i], "label": label, "id": str(i)}


def manual_confusion(model: nn.Module, data: Samples, n: int = 7, head: str = "sem"):
    cm = ConfusionMatrix(n)
    model.eval()
    with torch.no_grad():
        for i in range(len(data)):
            out = model(model.preprocessing.normalize(data.images[i : i + 1]))
            out = out[head] if isinstance(out, dict) else out
            cm.update(out, (data.geo if head == "geo" else data.labels)[i : i + 1])
    return cm


def test_matches_a_manual_loop_and_normalises_uint8_images() -> None:
    model, data = TinyNet(), Samples()
    loader = DataLoader(data, batch_size=2, collate_fn=collate_pad)
    result = evaluate(model, loader, "cpu", num_classes=7, class_names=list("abcdefg"))
    expected = manual_confusion(model, data).compute()
    for key in ("pixel_acc", "mean_acc", "mean_iu", "fw_iu"):
        assert result[key] == expected[key]
    assert result["num_images"] == 5 and result["classes"] == list("abcdefg")
    assert result["num_pixels"] == 5 * 12 * 10 - 5 * 3  # ignore pixels left out
    assert "heads" not in result


def test_amp_is_off_on_cpu() -> None:
    model, loader = TinyNet(), DataLoader(Samples(3), batch_size=1, collate_fn=collate_pad)
    a, _ = evaluate_confusion(model, loader, "cpu", amp=True)
    b, _ = evaluate_confusion(model, loader, "cpu")
    assert torch.equal(a["main"].matrix, b["main"].matrix)


def test_restores_training_mode_and_checks_num_classes() -> None:
    model = TinyNet().train()
    loader = DataLoader(Samples(2), batch_size=1, collate_fn=collate_pad)
    evaluate(model, loader)
    assert model.training
    with pytest.raises(ValueError, match="outputs 7 classes, expected 21"):
        evaluate(model, loader, num_classes=21)


def test_multi_head_outputs_pair_with_dict_labels_by_key() -> None:
    model = TinyNet(two_heads=True)
    data = Samples(two_heads=True)
    loader = DataLoader(data, batch_size=2, collate_fn=collate_pad)
    names = list("abcdefg")
    result = evaluate(model, loader, exclude={"sem": ["g"]}, class_names={"sem": names})
    assert result["head"] == "sem" and list(result["heads"]) == ["sem", "geo"]
    sem, geo = manual_confusion(model, data), manual_confusion(model, data, 3, "geo")
    sem.class_names = names
    assert result["heads"]["sem"]["mean_iu"] == sem.compute(["g"])["mean_iu"]
    assert result["mean_iu"] == result["heads"]["sem"]["mean_iu"]
    assert result["heads"]["geo"]["pixel_acc"] == geo.compute()["pixel_acc"]
    # A plain label pairs with the primary head only.
    plain = evaluate(model, DataLoader(Samples(), batch_size=2, collate_fn=collate_pad))
    assert list(plain["heads"]) == ["sem"] and plain["mean_iu"] == sem.compute()["mean_iu"]
    only_geo = evaluate(model, loader, heads=["geo"])
    assert only_geo["head"] == "geo" and only_geo["pixel_acc"] == geo.compute()["pixel_acc"]


def test_sliding_window_and_flip_options() -> None:
    pointwise = nn.Conv2d(3, 4, 1)
    pointwise.preprocessing = get_preprocessing("caffe-voc")
    data = [
        {"image": torch.randint(0, 256, (3, 20, 18), dtype=torch.uint8), "label": lab}
        for lab in torch.randint(0, 4, (3, 20, 18))
    ]
    loader = DataLoader(data, batch_size=1, collate_fn=collate_pad)
    whole, _ = evaluate_confusion(pointwise, loader)
    tiled, _ = evaluate_confusion(pointwise, loader, sliding_window=8)
    assert torch.equal(whole["main"].matrix, tiled["main"].matrix)
    model = TinyNet()
    a, _ = evaluate_confusion(model, DataLoader(Samples(), collate_fn=collate_pad), flip=True)
    b, _ = evaluate_confusion(model, DataLoader(Samples(), collate_fn=collate_pad))
    assert not torch.equal(a["main"].matrix, b["main"].matrix)


@pytest.mark.parametrize("shuffle", [False, True])
def test_distributed_sampler_padding_is_not_counted_twice(shuffle: bool) -> None:
    # 5 samples over 2 replicas: DistributedSampler pads to 6 (one sample twice).
    model, data = TinyNet(), Samples(5)
    whole = manual_confusion(model, data)
    merged = ConfusionMatrix(7)
    total = 0
    for rank in range(2):
        sampler = DistributedSampler(data, num_replicas=2, rank=rank, shuffle=shuffle)
        loader = DataLoader(data, batch_size=2, sampler=sampler, collate_fn=collate_pad)
        matrices, count = evaluate_confusion(model, loader)
        merged.merge(matrices["main"])
        total += count
    assert total == 5
    assert torch.equal(merged.matrix, whole.matrix)
    sampler = DistributedSampler(data, num_replicas=2, rank=0, drop_last=True)
    with pytest.raises(ValueError, match="drop_last"):
        evaluate(model, DataLoader(data, sampler=sampler, collate_fn=collate_pad))


def test_shard_sampler_covers_every_sample_once() -> None:
    shards = [list(ShardSampler(range(7), num_replicas=3, rank=r)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(7))
    assert [len(ShardSampler(range(7), 3, r)) for r in range(3)] == [3, 2, 2]
    assert list(ShardSampler(7, 3, 1)) == [1, 4]  # a length works as well as a dataset
    with pytest.raises(ValueError, match="rank 3"):
        ShardSampler(7, 3, 3)
    assert list(make_eval_loader(Samples(3)).sampler) == [0, 1, 2]  # no process group


def test_dataset_scoring_reads_names_exclusions_and_ignore_index() -> None:
    class SiftFlowLike(Samples):
        classes = list("abcdefg")
        targets = {"sem": list("abcdefg"), "geo": ["sky", "ground", "vertical"]}
        eval_exclude = ["g"]
        ignore_index = 7

    data = SiftFlowLike(two_heads=True)
    scoring = dataset_scoring(torch.utils.data.Subset(data, [0, 1]))  # Subset looked through
    assert scoring == Scoring(dict(data.targets), {"sem": ["g"], "geo": []}, 7)
    plain = Samples()
    plain.classes = list("abcdefg")
    assert dataset_scoring(plain, 7) == Scoring(list("abcdefg"), [], 255)
    assert dataset_scoring(plain, 5).class_names is None  # names of another count dropped
    with pytest.raises(ValueError, match="predicts 5 classes but the dataset has 7"):
        dataset_scoring(plain, 5, strict=True)


def test_evaluate_model_is_evaluate_with_the_matrices() -> None:
    model = TinyNet(two_heads=True)
    loader = DataLoader(Samples(two_heads=True), batch_size=2, collate_fn=collate_pad)
    names = {"sem": list("abcdefg"), "geo": ["sky", "ground", "vertical"]}
    result = evaluate_model(model, loader, scoring=Scoring(names, {"sem": ["g"]}))
    metrics = evaluate(model, loader, class_names=names, exclude={"sem": ["g"]})
    drop = ("seconds", "images_per_s")
    assert {k: v for k, v in result.metrics.items() if k not in drop} == {
        k: v for k, v in metrics.items() if k not in drop
    }
    assert result.primary == "sem" and list(result.matrices) == ["sem", "geo"]
    assert result.matrix is result.matrices["sem"] and result.num_images == 5
    assert result.excluded() == ["g"] and result.excluded("geo") == []
    assert result.head_metrics("geo") == metrics["heads"]["geo"]
    assert "(excluded)" in result.table() and "vertical" in result.table("geo")
    assert result.predicted_classes() == int((result.matrix.matrix.sum(0) > 0).sum()) >= 1
    assert MAIN == SINGLE_HEAD  # the old name of the single head, kept one release


def test_predict_samples_draws_the_primary_head_and_keeps_the_mode() -> None:
    model = TinyNet(two_heads=True).train()
    data = Samples(2, two_heads=True)
    transform = build_transforms(False, model.preprocessing)
    samples = predict_samples(model, [transform(data[i]) for i in range(2)], 5)
    assert model.training and len(samples) == 2
    first = samples[0]
    assert first.image.shape == (12, 10, 3) and str(first.image.dtype) == "uint8"
    assert (first.image == data.images[0].permute(1, 2, 0).numpy()).all()  # denormalised
    assert (first.truth == data.labels[0].numpy()).all()  # the primary head's labels
    with torch.no_grad():
        out = model.eval()(model.preprocessing.normalize(data.images[:1]))["sem"]
    assert (first.pred == out[0].argmax(0).numpy()).all()


# ------------------------------------------------------------------- 2 processes (test_ddp)
def synthetic_samples() -> list[dict]:
    """5 transformed synthetic images: the 2-rank evaluation checks' data (``ddp_worker.py``)."""
    dataset = create_dataset("synthetic", split="val", num_samples=5, size=32)
    transform = build_transforms(False, "caffe-voc")
    return [transform(dataset[i]) for i in range(len(dataset))]


# ------------------------------------------------------------ boundary F and IU by object size
def manual_extras(model: nn.Module, data: Samples, extra: ExtraMetrics, head: str = "sem"):
    """The accumulators fed image by image with the model's argmax (an independent loop)."""
    n = 3 if head == "geo" else 7
    accumulators = extra.accumulators(n, 255, None)
    model.eval()
    with torch.no_grad():
        for i in range(len(data)):
            out = model(model.preprocessing.normalize(data.images[i : i + 1]))
            out = out[head] if isinstance(out, dict) else out
            truth = (data.geo if head == "geo" else data.labels)[i]
            for accumulator in accumulators:
                accumulator.update(out[0].argmax(0), truth)
    return accumulators


def test_extra_metrics_per_head_equal_a_manual_loop() -> None:
    torch.manual_seed(0)
    model, data = TinyNet(two_heads=True), Samples(two_heads=True)
    extra = ExtraMetrics(boundary_tolerance=1.5)
    loader = DataLoader(data, batch_size=2, collate_fn=collate_pad)
    result = evaluate_model(model, loader, extra=extra)
    for head in ("sem", "geo"):
        manual = manual_extras(model, data, extra, head)
        want = {k: v for accumulator in manual for k, v in accumulator.compute().items()}
        got = result.head_metrics(head)
        assert [a.counts.tolist() for a in result.extras[head]] == [
            a.counts.tolist() for a in manual
        ]
        assert got["boundary_f"] == pytest.approx(want["boundary_f"], nan_ok=True)
        for bucket in ("small", "medium", "large"):
            np.testing.assert_allclose(
                got["per_class_size_iu"][bucket], want["per_class_size_iu"][bucket], equal_nan=True
            )
    assert "BF" in result.table() and "IU-L" in result.table("geo")
    assert "boundary F" in result.table() and "tolerance 1.5 px" in result.table()
    # Off by default (validation during training): none of the keys, the table as before.
    plain = evaluate_model(model, loader)
    assert "boundary_f" not in plain.metrics and "size_iu" not in plain.metrics
    assert plain.extras == {} and "BF" not in plain.table()
    only_sizes = evaluate(model, loader, extra=ExtraMetrics(boundary_tolerance=None))
    assert "size_iu" in only_sizes and "boundary_f" not in only_sizes


def test_extra_metrics_of_two_shards_merge_to_one_pass() -> None:
    # What all_reduce sums on 2 ranks: the shards' counts, added (DistributedSampler padding
    # left out as for the confusion matrix).
    model, data = TinyNet(), Samples(5)
    extra = ExtraMetrics()
    whole = evaluate_model(model, DataLoader(data, collate_fn=collate_pad), extra=extra)
    shards = []
    for rank in range(2):
        sampler = DistributedSampler(data, num_replicas=2, rank=rank, shuffle=True)
        loader = DataLoader(data, batch_size=1, sampler=sampler, collate_fn=collate_pad)
        shards.append(evaluate_model(model, loader, extra=extra).extras["main"])
    for one, (first, second) in zip(whole.extras["main"], zip(*shards, strict=True), strict=True):
        assert np.array_equal(first.merge(second).counts, one.counts)
