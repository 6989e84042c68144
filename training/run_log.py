"""The run log of ``slerir train``: CSV files, TensorBoard scalars and console lines, written by rank 0 alone.

The CSV logs survive a resume: rows past the checkpoint a run resumes from are dropped, and a resumed run that
logs other terms widens the header instead of starting a second table in the same file.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any

from slerir_core.config import STAGES


class RunLog:
    """CSV files, TensorBoard scalars and console lines of one run; inert on ranks other than 0.

    Args:
        out: the run folder.
        primary: whether this process logs.
        start_step: rows after this step (from a run killed after its last checkpoint) are dropped.
    """

    def __init__(self, out: Path, primary: bool, start_step: int) -> None:
        self.out, self.primary = out, primary
        self.tb = None
        if not primary:
            return
        for name in ("train_log.csv", "val_log.csv"):
            truncate_csv(out / name, start_step)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.print("note: tensorboard is not installed; TensorBoard scalars are skipped (CSV logs are written)")
        else:
            self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=start_step + 1 if start_step else None)

    def print(self, message: str) -> None:
        """A console line (tqdm-safe)."""
        if self.primary:
            from tqdm import tqdm

            tqdm.write(message, file=sys.stderr)

    def row(self, name: str, values: dict[str, Any], step: int, scalars: bool = True) -> None:
        """Append a row to ``<name>.csv`` and (with ``scalars``) its numbers to TensorBoard under ``train/``."""
        if not self.primary:
            return
        path = self.out / f"{name}.csv"
        fields = list(values)
        if path.exists() and path.stat().st_size:
            with path.open(newline="") as fh:
                header = next(csv.reader(fh), [])
            if header != fields:  # a run resumed with other logged terms: one header for all rows
                fields = header + [f for f in fields if f not in header]
                _rewrite_csv(path, fields)
        new = not path.exists() or path.stat().st_size == 0
        with path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            if new:
                writer.writeheader()
            writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in values.items()})
        if self.tb is not None and scalars:
            for key, value in values.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.tb.add_scalar(f"{name.split('_')[0]}/{key}", value, step)

    def close(self) -> None:
        """Flush TensorBoard."""
        if self.tb is not None:
            self.tb.close()


def truncate_csv(path: Path, last_step: int) -> None:
    """Keep only the rows up to ``last_step`` (all of them are dropped for a fresh run)."""
    if path.exists():
        _rewrite_csv(path, keep=lambda row: int(row["step"]) <= last_step)


def _rewrite_csv(path: Path, fields: list[str] | None = None, keep: Any = None) -> None:
    """Rewrite a CSV log in place with the given columns (rows lacking one leave it empty), keeping the rows
    ``keep`` accepts (all by default)."""
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        rows = [r for r in reader if keep is None or keep(r)]
        fields = fields or list(reader.fieldnames or [])
    with path.open("w", newline="") as fh:
        if rows or fields:
            # extrasaction: a row longer than its header (a log written by an older version) loses the surplus
            # instead of stopping the run.
            writer = csv.DictWriter(fh, fieldnames=fields, restval="", extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)


def log_validation(results: dict[str, Any], step: int, log: RunLog, final: bool = False) -> None:
    """Print a validation table (from ``validate``) and, except for the final one, log its rows to
    ``val_log.csv`` and its PSNR and purity to TensorBoard."""
    width = max(map(len, results), default=0)
    title = "final validation" if final else "validation"
    lines = [f"step {step} {title} (PSNR, gain over the input, most common path, its purity, expert load per stage):"]
    for task, r in results.items():
        loads = {
            f"load_{name}": "/".join(f"{v:.2f}" for v in load)
            for name, load in zip(STAGES, r["stage_load"], strict=True)
        }
        if not final:
            log.row(
                "val_log",
                {
                    "step": step,
                    "task": task,
                    "psnr": r["psnr"],
                    "gain": r["gain"],
                    "path": r["path"],
                    "purity": r["purity"],
                    **loads,
                },
                step,
                scalars=False,
            )
        if log.tb is not None and not final:
            log.tb.add_scalar(f"val/psnr_{task}", r["psnr"], step)
            log.tb.add_scalar(f"val/purity_{task}", r["purity"], step)
        lines.append(
            f"  {task:<{width}}  {r['psnr']:6.2f} dB ({r['gain']:+6.2f})  path {r['path']}  purity {r['purity']:.2f}"
            f"  load {' '.join(loads.values())}"
        )
    log.print("\n".join(lines))
