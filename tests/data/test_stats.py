"""Median-frequency class weights (Eigen & Fergus, ICCV 2015) on a hand-computed toy set."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fcnkit.data.stats import (
    ABSENT_CLASS_WEIGHT,
    class_statistics,
    class_weights_line,
    median_frequency_weights,
)

# Three 2 x 4 label maps over 4 classes (a, b, c, d; 255 = ignore):
#   image 0: a a a a a a b 255   -> 7 labelled pixels: a 6, b 1
#   image 1: a a c c c c 255 255 -> 6 labelled pixels: a 2, c 4
#   image 2: b b b b c c c c     -> 8 labelled pixels: b 4, c 4
# pixels:         a 8, b 5, c 8, d 0
# labelled pixels of the images holding the class: a 7+6 = 13, b 7+8 = 15, c 6+8 = 14
# f = a 8/13, b 5/15 = 1/3, c 8/14 = 4/7; median of the present classes = 4/7
# w = a (4/7)/(8/13) = 13/14, b (4/7)/(1/3) = 12/7, c 1, d absent -> 1.0
# (counting the ignore pixels would give a 8/16, b 5/16, c 8/16: other weights)
LABELS = [
    [[0, 0, 0, 0], [0, 0, 1, 255]],
    [[0, 0, 2, 2], [2, 2, 255, 255]],
    [[1, 1, 1, 1], [2, 2, 2, 2]],
]
EXPECTED = [13 / 14, 12 / 7, 1.0, ABSENT_CLASS_WEIGHT]


class Toy(torch.utils.data.Dataset):
    classes = ["a", "b", "c", "d"]

    def __len__(self) -> int:
        return len(LABELS)

    def __getitem__(self, i: int) -> dict:
        label = torch.tensor(LABELS[i], dtype=torch.int64)
        return {"image": torch.zeros(3, 2, 4, dtype=torch.uint8), "label": label}


def test_weights_of_the_hand_computed_toy_set() -> None:
    s = class_statistics(Toy()).targets["label"]
    assert s.pixels.tolist() == [8, 5, 8, 0]
    assert s.image_pixels.tolist() == [13, 15, 14, 0]  # ignore pixels not counted
    assert s.ignore_pixels == 3
    np.testing.assert_allclose(s.median_frequency_weights, EXPECTED, rtol=1e-12)


def test_absent_classes_get_the_neutral_weight_and_stay_out_of_the_median() -> None:
    # two present classes: median of (1/2, 1/4) = 3/8 -> w = 3/4, 3/2; the absent one 1.0
    w = median_frequency_weights(np.array([2, 0, 1]), np.array([4, 0, 4]))
    np.testing.assert_allclose(w, [0.75, ABSENT_CLASS_WEIGHT, 1.5])
    assert ABSENT_CLASS_WEIGHT == 1.0
    assert median_frequency_weights(np.zeros(3), np.zeros(3)).tolist() == [1.0] * 3


def test_weights_line_parses_as_the_config_key() -> None:
    from fcnkit.engine.config import load_config

    line = class_weights_line(np.array(EXPECTED))
    key, _, value = line.partition(": ")
    config = load_config({"model": {"num_classes": 4}}, [f"{key}={value}"])
    assert config.loss.class_weights == pytest.approx(EXPECTED, rel=1e-5)
