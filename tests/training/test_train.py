"""The training loop on the tiny config, on a CPU: loss, export, bit-exact resume, the phase hand-off, DDP."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from slerir_core.checkpoint import load_model, read_metadata
from slerir_core.cli import main as cli
from slerir_core.model.router import target_anchors
from training.config import load_experiment
from training.step import attention_kernels

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
def phase1(tmp_path_factory) -> Path:
    """A finished 40-step phase-1 run of tiny-synthetic."""
    out = tmp_path_factory.mktemp("phase1")
    assert train("--steps", "40", "--out", str(out), *QUICK) == 0
    return out


def test_phase1_lowers_loss_and_exports_labelled_weights(phase1):
    loss = [float(v) for _, v in sorted(losses(phase1).items())]
    assert len(loss) == 40
    assert sum(loss[-10:]) / 10 < sum(loss[:10]) / 10
    model = load_model(phase1 / "model.safetensors")
    assert model.config.tasks == ("noise", "rain", "haze", "blur", "lowlight")
    norms = model.task_prototypes.norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    assert (phase1 / "checkpoint.pt").is_file() and (phase1 / "tensorboard").is_dir()
    # Validation after every epoch (10 steps), one row per task.
    with (phase1 / "val_log.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert sorted({int(r["step"]) for r in rows}) == [10, 20, 30, 40]
    assert all({r["task"] for r in rows if int(r["step"]) == s} == set(model.config.tasks) for s in (10, 40))
    summary = json.loads((phase1 / "summary.json").read_text())
    assert summary["finished"] and set(summary["validation"]) == set(model.config.tasks)
    assert "min_centre_angle" in summary["last"] and "min_load" in summary["last"]
    # The resolved config in the run folder is itself a valid training config.
    resolved = load_experiment(phase1 / "config.yaml")
    assert resolved.model == model.config and resolved.train.phase1.steps == 40


def test_resume_continues_bit_exactly(tmp_path):
    split, whole = tmp_path / "split", tmp_path / "whole"
    small = [*QUICK, "train.phase1.batch_size=4"]  # exactness does not need big batches
    assert train("--steps", "30", "--stop-at", "20", "--out", str(split), *small) == 0
    assert not (split / "model.safetensors").exists()  # stopped, not finished
    assert max(losses(split)) == 20
    assert train("--steps", "30", "--out", str(split), "--resume", *small) == 0
    assert train("--steps", "30", "--out", str(whole), *small) == 0
    a, b = losses(split), losses(whole)
    assert [a[s] for s in range(21, 31)] == [b[s] for s in range(21, 31)]
    wa, wb = load_file(str(split / "model.safetensors")), load_file(str(whole / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_finished_run_is_not_overwritten(phase1, capsys):
    assert train("--steps", "40", "--out", str(phase1)) == 2
    assert "--resume" in capsys.readouterr().err


def test_phase2_freezes_routing_and_keeps_routes(phase1, tmp_path):
    out = tmp_path / "phase2"
    init = phase1 / "model.safetensors"
    assert train("--phase", "2", "--init", str(init), "--steps", "6", "--out", str(out), *QUICK) == 0
    before, after = load_file(str(init)), load_file(str(out / "model.safetensors"))
    frozen = ("degradation_extractor.", "content_extractor.", "router.", "task_prototypes")
    checked = [name for name in before if name.startswith(frozen)]
    assert {p for p in frozen if any(n.startswith(p) for n in checked)} == set(frozen)
    assert "router.centres" in checked
    for name in checked:
        assert torch.equal(before[name], after[name]), f"{name} changed in phase 2"
    assert any(not torch.equal(t, after[n]) for n, t in before.items() if n.startswith("stages."))
    s1 = json.loads((phase1 / "summary.json").read_text())["validation"]
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
            "train.phase1.batch_size=8",
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and set(summary["validation"]) == {"noise", "rain"}  # the test folders present


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
        "train.phase1.batch_size=4",
        "data.val_images=1",
        "train.prototype_batches=1",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    digests = json.loads((out / "summary.json").read_text())["rank_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]


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
    assert history["hours"]["cpu"] > 0 and history["run_dates"] and history["hardware"]
    # Validation before the first step (to time the closing one) and at every epoch, with per-stage loads.
    with (out / "val_log.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert int(rows[0]["step"]) == 0
    loads = [float(v) for v in rows[0]["load_enc1"].split("/")]
    assert len(loads) == 3 and abs(sum(loads) - 1) < 0.02


def test_init_continues_the_training_record(phase1, tmp_path):
    out = tmp_path / "continued"
    assert train("--init", str(phase1 / "model.safetensors"), "--steps", "3", "--out", str(out), *QUICK) == 0
    before = json.loads(read_metadata(phase1 / "model.safetensors")["history"])
    after = json.loads(read_metadata(out / "model.safetensors")["history"])
    assert after["steps"] == before["steps"] + 3 == 43 and after["crops"] == before["crops"] + 30
    assert after["hours"]["cpu"] > before["hours"]["cpu"] and after["run_dates"] == before["run_dates"]


def test_cpu_processes_train_as_identical_ranks(tmp_path):
    out = tmp_path / "ranks"
    sets = ["train.cpu_processes=2", "train.phase1.batch_size=4", "data.val_images=1", "train.prototype_batches=1"]
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


def test_weights_train_on_in_the_phase_they_record(phase1, tmp_path):
    phase2 = tmp_path / "phase2"
    assert (
        train("--phase", "2", "--init", str(phase1 / "model.safetensors"), "--steps", "2", "--out", str(phase2), *QUICK)
        == 0
    )
    for init, phase in (
        (phase2 / "model.safetensors", "2"),
        (phase2 / "checkpoint.pt", "2"),
        (phase1 / "model.safetensors", "1"),
    ):
        out = tmp_path / f"from-{init.parent.name}-{init.suffix[1:]}"
        assert train("--init", str(init), "--steps", "1", "--out", str(out), "--set", "data.val_images=0") == 0
        assert read_metadata(out / "model.safetensors")["phase"] == phase
    # --phase still decides.
    out = tmp_path / "rephased"
    assert (
        train("--phase", "1", "--init", str(phase2 / "model.safetensors"), "--steps", "1", "--out", str(out), *QUICK)
        == 0
    )
    assert read_metadata(out / "model.safetensors")["phase"] == "1"


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


def test_centres_follow_the_fixed_targets(tmp_path):
    """With the clustering's EMA off, each centre lands on its anchor at every step once targets are fixed (the
    balanced share of the same vectors would put it elsewhere)."""
    out = tmp_path / "anchored"
    sets = ["model.route_alpha=1.0", "model.per_stage_centres=true", "model.clustering.momentum=0.0"]
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


def test_a_checkpoint_written_before_phases_were_named_resumes(tmp_path, capsys):
    out = tmp_path / "old"
    quick = ["data.val_images=0", "train.phase1.batch_size=2"]
    assert train("--steps", "2", "--stop-at", "1", "--out", str(out), "--set", *quick) == 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    state["stage"] = state.pop("phase")
    old = state["config"]["train"]
    old["stage"], old["stage1"], old["stage2"] = old.pop("phase"), old.pop("phase1"), old.pop("phase2")
    old["amp"] = {"fp32": "none"}.get(old.pop("precision"), "auto")
    torch.save(state, out / "checkpoint.pt")
    capsys.readouterr()
    assert train("--phase", "2", "--init", str(out / "checkpoint.pt"), "--resume", "--out", str(out)) == 2
    assert "is a phase-1 run; this is phase 2" in capsys.readouterr().err
    assert train("--steps", "2", "--resume", "--out", str(out), "--set", *quick) == 0
    assert "another config" not in capsys.readouterr().err  # the old keys read as the new ones
    assert json.loads((out / "summary.json").read_text())["finished"]


def test_a_checkpoint_whose_optimiser_state_does_not_fit_says_how_to_go_on(tmp_path, capsys):
    """As one written when each expert's tensors were parameters apiece: more of them than the model has."""
    out = tmp_path / "old"
    quick = ["data.val_images=0", "train.phase1.batch_size=2"]
    assert train("--steps", "2", "--stop-at", "1", "--out", str(out), "--set", *quick) == 0
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    params = state["optimizer"]["param_groups"][0]["params"]
    params += [max(params) + 1 + i for i in range(len(params))]
    torch.save(state, out / "checkpoint.pt")
    capsys.readouterr()
    assert train("--steps", "2", "--resume", "--out", str(out), "--set", *quick) == 2
    assert f"--init {out / 'checkpoint.pt'}" in capsys.readouterr().err
    new = ["--out", str(tmp_path / "new"), "--set", *quick]
    assert train("--steps", "2", "--init", str(out / "checkpoint.pt"), *new) == 0


def test_killing_a_cpu_ranks_run_ends_its_ranks(tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "slerir_core.cli", "train", "--config", "tiny-synthetic", "--steps", "100000"]
    sets = ["train.cpu_processes=2", "data.val_images=0", "train.phase1.batch_size=2"]
    launcher = subprocess.Popen([*cmd, "--out", str(out), "--set", *sets], stderr=subprocess.PIPE, text=True)
    try:
        for line in launcher.stderr:  # the first progress line: both ranks are training
            if "phase 1:" in line:
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
    quick = ["data.val_images=0", "train.phase1.batch_size=2"]
    assert train("--steps", "4", "--stop-at", "2", "--out", str(out), "--set", *quick) == 0
    assert train("--steps", "4", "--resume", "--out", str(out), "--set", *quick, "model.route_alpha=1.0") == 0
    with (out / "train_log.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert [r["route"] == "" for r in rows] == [True, True, False, False]
    assert all(float(r["lr"]) < 0.01 for r in rows)  # every value under its own column


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
