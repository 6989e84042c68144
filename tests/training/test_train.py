"""Two-stage training on the tiny config, on a CPU: loss, export, bit-exact resume, stage hand-off, DDP."""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from slerir_core.checkpoint import load_model, read_metadata
from slerir_core.cli import main as cli
from slerir_core.errors import ConfigError
from slerir_core.model import SLERIR
from slerir_core.model.router import target_anchors
from training.config import load_experiment, with_overrides
from training.train import attention_kernels, parse_duration, routing_targets, update_prototypes

# One validation image per task (and σ) keeps the per-epoch validation cheap; runs whose routes are compared
# use the same validation set.
QUICK = ["--set", "data.val_images=1"]


def train(*args: str) -> int:
    return cli(["train", "--config", "tiny-synthetic", *args])


def losses(run: Path) -> dict[int, str]:
    """Step -> loss as written (full precision), from the run's CSV log."""
    with (run / "train_log.csv").open() as fh:
        return {int(r["step"]): r["loss"] for r in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def stage1(tmp_path_factory) -> Path:
    """A finished 40-step stage-1 run of tiny-synthetic."""
    out = tmp_path_factory.mktemp("stage1")
    assert train("--steps", "40", "--out", str(out), *QUICK) == 0
    return out


def test_stage1_lowers_loss_and_exports_labelled_weights(stage1):
    loss = [float(v) for _, v in sorted(losses(stage1).items())]
    assert len(loss) == 40
    assert sum(loss[-10:]) / 10 < sum(loss[:10]) / 10
    model = load_model(stage1 / "model.safetensors")
    assert model.config.tasks == ("noise", "rain", "haze", "blur", "lowlight")
    norms = model.task_prototypes.norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    assert (stage1 / "checkpoint.pt").is_file() and (stage1 / "tensorboard").is_dir()
    # Validation after every epoch (10 steps), one row per task.
    with (stage1 / "val_log.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert sorted({int(r["step"]) for r in rows}) == [10, 20, 30, 40]
    assert all({r["task"] for r in rows if int(r["step"]) == s} == set(model.config.tasks) for s in (10, 40))
    summary = json.loads((stage1 / "summary.json").read_text())
    assert summary["finished"] and set(summary["validation"]) == set(model.config.tasks)
    assert "min_centre_angle" in summary["last"] and "min_load" in summary["last"]
    # The resolved config in the run folder is itself a valid training config.
    resolved = load_experiment(stage1 / "config.yaml")
    assert resolved.model == model.config and resolved.train.stage1.steps == 40


def test_resume_continues_bit_exactly(tmp_path):
    split, whole = tmp_path / "split", tmp_path / "whole"
    small = [*QUICK, "train.stage1.batch_size=4"]  # exactness does not need big batches
    assert train("--steps", "30", "--stop-at", "20", "--out", str(split), *small) == 0
    assert not (split / "model.safetensors").exists()  # stopped, not finished
    assert max(losses(split)) == 20
    assert train("--steps", "30", "--out", str(split), "--resume", *small) == 0
    assert train("--steps", "30", "--out", str(whole), *small) == 0
    a, b = losses(split), losses(whole)
    assert [a[s] for s in range(21, 31)] == [b[s] for s in range(21, 31)]
    wa, wb = load_file(str(split / "model.safetensors")), load_file(str(whole / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_finished_run_is_not_overwritten(stage1, capsys):
    assert train("--steps", "40", "--out", str(stage1)) == 2
    assert "--resume" in capsys.readouterr().err


def test_stage2_freezes_routing_and_keeps_routes(stage1, tmp_path):
    out = tmp_path / "stage2"
    init = stage1 / "model.safetensors"
    assert train("--stage", "2", "--init", str(init), "--steps", "6", "--out", str(out), *QUICK) == 0
    before, after = load_file(str(init)), load_file(str(out / "model.safetensors"))
    frozen = ("degradation_extractor.", "content_extractor.", "router.", "task_prototypes")
    checked = [name for name in before if name.startswith(frozen)]
    assert {p for p in frozen if any(n.startswith(p) for n in checked)} == set(frozen)
    assert "router.centres" in checked
    for name in checked:
        assert torch.equal(before[name], after[name]), f"{name} changed in stage 2"
    assert any(not torch.equal(t, after[n]) for n, t in before.items() if n.startswith("stages."))
    s1 = json.loads((stage1 / "summary.json").read_text())["validation"]
    s2 = json.loads((out / "summary.json").read_text())["validation"]
    assert {t: r["path"] for t, r in s1.items()} == {t: r["path"] for t, r in s2.items()}
    assert "hc" not in json.loads((out / "summary.json").read_text())["last"]


def test_trains_on_real_data_folders(promptir_root, tmp_path):
    out = tmp_path / "folders"
    assert (
        train(
            "--steps",
            "2",
            "--out",
            str(out),
            "--set",
            "data.type=folders",
            f"data.root={promptir_root}",
            "data.tasks=[noise, rain, haze, lowlight]",
            "data.crop=16",
            "train.steps_per_epoch=null",
            "train.stage1.batch_size=8",
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and set(summary["validation"]) == {"noise", "rain"}  # the test folders present


def test_stage2_needs_initial_weights(tmp_path, capsys):
    assert train("--stage", "2", "--steps", "2", "--out", str(tmp_path / "s2")) == 2
    assert "--init" in capsys.readouterr().err


def test_two_process_ddp_ends_with_identical_weights(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "slerir_core.cli",
        "train",
        "--config",
        "tiny-synthetic",
        "--steps",
        "4",
        "--out",
        str(out),
        "--set",
        "train.stage1.batch_size=4",
        "data.val_images=1",
        "train.prototype_batches=1",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    digests = json.loads((out / "summary.json").read_text())["rank_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]


def test_prototypes_are_an_ema_of_task_means():
    protos = torch.zeros(3, 2, 4)
    f = torch.nn.functional.normalize(torch.randn(6, 2, 4), dim=-1)
    labels = torch.tensor([0, 0, 1, 1, 0, 1])
    update_prototypes(protos, f, labels, momentum=0.5)
    expected = torch.nn.functional.normalize(f[labels == 0].mean(0), dim=-1)
    assert torch.allclose(protos[0], expected, atol=1e-6)
    assert torch.equal(protos[2], torch.zeros(2, 4))  # task 2 unseen: untouched
    update_prototypes(protos, f[:1], labels[:1], momentum=0.5)
    blended = torch.nn.functional.normalize(0.5 * expected + 0.5 * f[0], dim=-1)
    assert torch.allclose(protos[0], blended, atol=1e-6)


def test_config_overrides_and_errors(tmp_path):
    exp = load_experiment("tiny-synthetic")
    changed = with_overrides(exp, **{"train.stage1.lr": 1e-3, "model.dim": 16})
    assert changed.train.stage1.lr == 1e-3 and changed.model.dim == 16 and changed.model.tasks == exp.data.tasks
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: {base: tiny, dimm: 4}\ntrain: {steps_per_epoch: 5}\n")
    with pytest.raises(ConfigError, match="dimm"):
        load_experiment(bad)
    bad.write_text("name: x\nmodel: tiny\ndata: {type: synthetic}\n")
    with pytest.raises(ConfigError, match="steps_per_epoch"):
        load_experiment(bad)
    with pytest.raises(ConfigError, match=r"unknown task.*snow"):
        with_overrides(exp, **{"data.tasks": ["noise", "snow"]})
    with pytest.raises(ConfigError, match="'foo' is not a section"):
        with_overrides(exp, **{"foo.bar": 1})
    with pytest.raises(ConfigError, match=r"'train\.stage1\.lr' is not a section"):
        with_overrides(exp, **{"train.stage1.lr.x": 1})


def test_bad_overrides_are_clear_errors_before_any_output(tmp_path, capsys):
    out = tmp_path / "run"
    assert train("--steps", "2", "--out", str(out), "--set", "data.tasks=[noise, snow]") == 2
    assert "snow" in capsys.readouterr().err and not out.exists()


def test_time_budget_stops_with_checkpoint_weights_and_table(tmp_path, capsys):
    out = tmp_path / "budget"
    assert train("--steps", "100000", "--time-budget", "8s", "--out", str(out), *QUICK) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["out_of_time"] and not summary["finished"] and 0 < summary["step"] < 100000
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["step"] == summary["step"] == max(losses(out))  # the last step is logged and checkpointed
    assert set(summary["validation"]) == {"noise", "rain", "haze", "blur", "lowlight"}
    err = capsys.readouterr().err
    assert "final validation" in err and "(time budget)" in err
    history = json.loads(read_metadata(out / "model.safetensors")["history"])
    assert history["steps"] == summary["step"] and history["crops"] == 10 * summary["step"]
    assert history["hours"]["cpu"] > 0 and history["sessions"] and history["hardware"]
    # Validation before the first step (to time the closing one) and at every epoch, with per-stage loads.
    with (out / "val_log.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert int(rows[0]["step"]) == 0
    loads = [float(v) for v in rows[0]["load_enc1"].split("/")]
    assert len(loads) == 3 and abs(sum(loads) - 1) < 0.02


@pytest.mark.parametrize("text", ["0", "-3m", "ten", "5d", "nan", ""])
def test_bad_time_budget_is_a_usage_error(text):
    with pytest.raises(argparse.ArgumentTypeError, match="duration"):
        parse_duration(text)


def test_durations():
    assert [parse_duration(t) for t in ("90", "90s", "1.5m", "2h")] == [90.0, 90.0, 90.0, 7200.0]


def test_init_continues_the_training_record(stage1, tmp_path):
    out = tmp_path / "continued"
    assert train("--init", str(stage1 / "model.safetensors"), "--steps", "3", "--out", str(out), *QUICK) == 0
    before = json.loads(read_metadata(stage1 / "model.safetensors")["history"])
    after = json.loads(read_metadata(out / "model.safetensors")["history"])
    assert after["steps"] == before["steps"] + 3 == 43 and after["crops"] == before["crops"] + 30
    assert after["hours"]["cpu"] > before["hours"]["cpu"] and after["sessions"] == before["sessions"]


def test_cpu_processes_train_as_identical_ranks(tmp_path):
    out = tmp_path / "ranks"
    sets = ["train.cpu_processes=2", "train.stage1.batch_size=4", "data.val_images=1", "train.prototype_batches=1"]
    cmd = [sys.executable, "-m", "slerir_core.cli", "train", "--config", "tiny-synthetic", "--steps", "3"]
    proc = subprocess.run(
        [*cmd, "--out", str(out), "--set", *sets],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["rank_digests"]) == 2 and summary["rank_digests"][0] == summary["rank_digests"][1]
    assert summary["history"]["crops"] == 3 * 4 * 2


def test_weights_train_on_in_the_stage_they_record(stage1, tmp_path):
    stage2 = tmp_path / "stage2"
    assert (
        train("--stage", "2", "--init", str(stage1 / "model.safetensors"), "--steps", "2", "--out", str(stage2), *QUICK)
        == 0
    )
    for init, stage in (
        (stage2 / "model.safetensors", "2"),
        (stage2 / "checkpoint.pt", "2"),
        (stage1 / "model.safetensors", "1"),
    ):
        out = tmp_path / f"from-{init.parent.name}-{init.suffix[1:]}"
        assert train("--init", str(init), "--steps", "1", "--out", str(out), "--set", "data.val_images=0") == 0
        assert read_metadata(out / "model.safetensors")["stage"] == stage
    # --stage still decides.
    out = tmp_path / "restaged"
    assert (
        train("--stage", "1", "--init", str(stage2 / "model.safetensors"), "--steps", "1", "--out", str(out), *QUICK)
        == 0
    )
    assert read_metadata(out / "model.safetensors")["stage"] == "1"


def test_a_failing_cpu_rank_gives_the_exit_code(tmp_path, capsys):
    out = tmp_path / "bad"
    sets = ["train.cpu_processes=2", "data.val_images=0"]
    assert train("--stage", "2", "--steps", "2", "--out", str(out), "--set", *sets) == 2


def test_routing_consistency_term_is_logged_when_weighted(tmp_path):
    out = tmp_path / "route"
    assert train("--steps", "3", "--out", str(out), "--set", "model.route_alpha=1.0", "data.val_images=0") == 0
    last = json.loads((out / "summary.json").read_text())["last"]
    assert last["route"] > 0 and last["loss"] > last["l1"] + last["hc"]


def test_contrastive_loss_treats_a_route_group_as_one_degradation(tmp_path):
    everything = "data.route_groups=[[noise, rain, haze, blur, lowlight]]"
    for name, sets, has_negatives in (("apart", [], True), ("together", [everything], False)):
        out = tmp_path / name
        assert train("--steps", "1", "--out", str(out), "--set", "data.val_images=0", *sets) == 0
        hc = json.loads((out / "summary.json").read_text())["last"]["hc"]
        assert (hc > 0) == has_negatives  # one group: no negative pairs, no signal


@pytest.mark.parametrize(
    ("groups", "message"),
    [([["noise", "micro_noise"]], "micro_noise"), ([["noise", "rain"], ["rain"]], "one per task"), ([[]], "empty")],
)
def test_bad_route_groups_are_config_errors(groups, message):
    with pytest.raises(ConfigError, match=message):
        with_overrides(load_experiment("tiny-synthetic"), **{"data.route_groups": groups})


def test_routing_targets_are_fixed_once_every_task_is_seen():
    exp = with_overrides(load_experiment("tiny-synthetic"), **{"data.route_groups": [["noise", "blur"]]})
    job = SimpleNamespace(exp=exp)
    model = SLERIR(exp.model)
    centres = model.router.centres  # (K, C, d): task t starts next to expert t % 3 at every stage
    model.task_prototypes.copy_(centres[:, torch.arange(5) % 3].transpose(0, 1))
    model.task_prototypes[4] = 0  # low light not seen yet: nothing is fixed
    trainee = SimpleNamespace(model=model, route_targets=None)
    assert bool((routing_targets(job, trainee)[4] == -1).all()) and trainee.route_targets is None
    model.task_prototypes[4] = centres[:, 1]
    fixed = routing_targets(job, trainee)
    assert trainee.route_targets is fixed and torch.equal(fixed[0], fixed[3])  # noise and blur: one path
    assert len({tuple(path) for path in fixed.tolist()}) == 4
    # The prototypes move on (every task next to another expert); the targets stay, though a fresh
    # assignment would now differ.
    model.task_prototypes.copy_(centres[:, (torch.arange(5) + 1) % 3].transpose(0, 1))
    assert torch.equal(routing_targets(job, trainee), fixed)
    assert not torch.equal(routing_targets(job, SimpleNamespace(model=model, route_targets=None)), fixed)


def test_centres_follow_the_fixed_targets(tmp_path):
    """With the clustering's EMA off, each centre lands on its anchor at every step once targets are fixed (the
    balanced share of the same vectors would put it elsewhere)."""
    out = tmp_path / "anchored"
    sets = ["model.route_alpha=1.0", "model.per_layer_centres=true", "model.clustering.momentum=0.0"]
    assert train("--steps", "3", "--out", str(out), "--set", "data.val_images=0", *sets) == 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    weights = state["model"]
    anchors = target_anchors(weights["task_prototypes"], state["route_targets"], 3)
    guided = anchors.abs().sum(dim=-1) > 0
    cos = (weights["router.centres"] * anchors).sum(dim=-1)
    assert bool(guided.any()) and bool((cos[guided] > 0.99).all())


def test_resumed_run_keeps_its_routing_targets(tmp_path):
    out = tmp_path / "targets"
    sets = ["model.route_alpha=1.0", "data.val_images=0"]  # batch 10: every task in the first step
    assert train("--steps", "4", "--stop-at", "2", "--out", str(out), "--set", *sets) == 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["route_targets"].shape == (5, 8) and bool((state["route_targets"] >= 0).all())
    # Targets no assignment would give (every task on one path) show that the resumed run reads them back.
    state["route_targets"] = torch.ones_like(state["route_targets"])
    torch.save(state, out / "checkpoint.pt")
    assert train("--steps", "4", "--resume", "--out", str(out), "--set", *sets) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["route_targets"].values()) == {"1-1-1-1-1-1-1-1"}


def test_killing_a_cpu_ranks_run_ends_its_ranks(tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "slerir_core.cli", "train", "--config", "tiny-synthetic", "--steps", "100000"]
    sets = ["train.cpu_processes=2", "data.val_images=0", "train.stage1.batch_size=2"]
    launcher = subprocess.Popen([*cmd, "--out", str(out), "--set", *sets], stderr=subprocess.PIPE, text=True)
    try:
        for line in launcher.stderr:  # the first progress line: both ranks are training
            if "stage 1:" in line:
                break
        ranks = [int(p) for p in subprocess.check_output(["pgrep", "-P", str(launcher.pid)], text=True).split()]
        launcher.kill()
        launcher.wait()
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{pid}").exists() for pid in ranks) and time.monotonic() < deadline:
            time.sleep(0.2)
        # Zombies (ended, not yet reaped) have no status line other than Z.
        alive = [
            pid for pid in ranks if Path(f"/proc/{pid}").exists() and " Z " not in Path(f"/proc/{pid}/stat").read_text()
        ]
        assert not alive, f"ranks {alive} outlived their launcher"
    finally:
        launcher.kill()


def test_resuming_with_another_logged_term_keeps_one_csv_header(tmp_path):
    out = tmp_path / "resumed"
    quick = ["data.val_images=0", "train.stage1.batch_size=2"]
    assert train("--steps", "4", "--stop-at", "2", "--out", str(out), "--set", *quick) == 0
    assert train("--steps", "4", "--resume", "--out", str(out), "--set", *quick, "model.route_alpha=1.0") == 0
    with (out / "train_log.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert [r["route"] == "" for r in rows] == [True, True, False, False]
    assert all(float(r["lr"]) < 0.01 for r in rows)  # every value under its own column


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 half a zip", b"\x80\x04random"])
def test_a_broken_checkpoint_is_one_line_and_exit_two(tmp_path, capsys, content):
    out = tmp_path / "broken"
    out.mkdir()
    (out / "checkpoint.pt").write_bytes(content)
    assert train("--steps", "2", "--resume", "--out", str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "checkpoint.pt" in err and ("empty" in err or "corrupt" in err)


@pytest.mark.parametrize(("args", "message"), [(["--steps", "0"], "steps must be >= 1"), (["--device", "mps"], "mps")])
def test_unusable_requests_are_one_line_and_exit_two(tmp_path, capsys, args, message):
    out = tmp_path / "never"
    assert train(*args, "--out", str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and not out.exists()


def test_a_log_with_rows_longer_than_its_header_is_truncated_not_fatal(tmp_path):
    from training.run_log import truncate_csv

    log = tmp_path / "train_log.csv"
    log.write_text("step,loss\n1,0.5\n2,0.4,0.9\n3,0.3\n")
    truncate_csv(log, 2)
    assert log.read_text().splitlines() == ["step,loss", "1,0.5", "2,0.4"]


def autograd_nodes(t: torch.Tensor) -> set[str]:
    """Names of the backward functions in the graph that produced ``t``."""
    names, todo = set(), [t.grad_fn]
    while todo:
        node = todo.pop()
        if node is not None and type(node).__name__ not in names:
            names.add(type(node).__name__)
            todo.extend(n for n, _ in node.next_functions)
    return names


@pytest.mark.parametrize("bf16", [True, False])
def test_cpu_bf16_steps_take_the_math_attention_whose_backward_is_faster(bf16):
    q = torch.randn(2, 4, 65, 32, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        default = autograd_nodes(F.scaled_dot_product_attention(q, q, q))
        with attention_kernels(torch.device("cpu"), bf16):
            chosen = autograd_nodes(F.scaled_dot_product_attention(q, q, q))
    assert any("Flash" in name for name in default)
    assert any("Flash" in name for name in chosen) is not bf16
