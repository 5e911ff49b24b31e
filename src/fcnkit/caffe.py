"""Moved to :mod:`fcnkit.weights.caffe` (every way weights come in lives in ``fcnkit.weights``);
re-exported here for one release."""

from fcnkit.weights.caffe import (  # noqa: F401 (re-exports)
    CaffeFormatError,
    CaffeLayer,
    CaffeNet,
    CaffeReport,
    caffe_state_dict,
    fit_blob,
    load_caffemodel,
    parse_caffemodel,
    read_caffemodel,
    score_classes,
)
