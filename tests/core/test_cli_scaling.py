"""``slerir restore --scaling``: the option reaches the restoration, and the log line and report name it; a
plain 3-D TIFF stack is reported as ZYX."""

from __future__ import annotations

import json

import numpy as np
import tifffile
import torch

from slerir_core.checkpoint import save_weights
from slerir_core.cli import main
from slerir_core.config import load_config
from slerir_core.model import SLERIR


def test_the_scaling_is_an_option_and_the_log_and_report_name_it(tmp_path, capsys):
    torch.manual_seed(0)
    weights = ["--weights", str(save_weights(SLERIR(load_config("tiny")), tmp_path / "tiny.safetensors")), "-q"]
    stack = (100 + np.random.default_rng(0).poisson(400, (5, 32, 32))).astype(np.uint16)
    stack[2, 4, 4] = 65535
    tifffile.imwrite(tmp_path / "stack.tif", stack)  # no axes recorded: tifffile reads them as QYX
    runs = {}
    for scaling in ("percentile", "minmax"):
        out = tmp_path / scaling
        assert (
            main(
                ["restore", str(tmp_path / "stack.tif"), "-o", str(out), "--save-maps", "--scaling", scaling, *weights]
            )
            == 0
        )
        log = capsys.readouterr().out
        assert "(5, 32, 32) uint16 ZYX" in log and f"scaling: {scaling}" in log
        report = json.loads((out / "stack_report.json").read_text())
        assert report["scaling"].startswith(scaling) and report["axes"] == "ZYX"
        runs[scaling] = tifffile.imread(out / "stack_restored.tif")
    minmax = json.loads((tmp_path / "minmax" / "stack_report.json").read_text())["scaling"]
    assert minmax == f"minmax: {stack.min()}-65535"
    assert not np.array_equal(runs["percentile"], runs["minmax"])
