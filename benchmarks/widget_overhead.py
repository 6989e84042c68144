"""The napari Restore widget's overhead: the widget's run time against a direct ``Restorer.restore`` call.

Some napari deep-learning plugins saw large slowdowns inside thread workers (torch thread pools in a
QThread). This restores the same image both ways, in alternating rounds so that a busy machine affects
both equally, and prints the median of each and their ratio; the target is a ratio within 1.10.

- direct: ``restorer.restore(image)`` on the main thread (plans, then restores tile by tile);
- widget: ``RestoreWidget.run()`` until its result layer is in the viewer (the thread worker plans,
  restores with progress updates, and the main thread adds the layer). The plugin's plan cache is
  cleared before each run so that both sides do the same work.

Both use the same number of torch threads (``--threads``, default every usable core): the widget sets it
in its worker thread, the direct call on the main thread. Run under a display:

    xvfb-run -a -s "-screen 0 1280x1024x24" python benchmarks/widget_overhead.py
    xvfb-run -a ... python benchmarks/widget_overhead.py --config tiny --size 256 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import numpy as np


def main(argv: list[str] | None = None) -> None:
    """Time the Restore widget against a direct ``Restorer.restore`` call and print both and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=None, help="untrained named config (default: the default model)")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (RGB, uint8)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of each (after one warm-up)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads for both (default: all cores)")
    args = parser.parse_args(argv)

    from slerir_core.device import default_torch_threads

    threads = args.threads or default_torch_threads()
    os.environ["SLERIR_TORCH_THREADS"] = str(threads)  # the widget's worker reads it
    warnings.filterwarnings("ignore")

    import napari

    from slerir_plugin._state import STATE, use_config

    viewer = napari.Viewer(show=False)
    if args.config:
        use_config(args.config, device="cpu")
    restorer = STATE.restorer()  # loads the model once (with the napari/Mesa workaround), shared by both
    import torch

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    image = (rng.random((args.size, args.size, 3)) * 255).astype(np.uint8)
    layer = viewer.add_image(image, name="bench", rgb=True)
    _dock, widget = viewer.window.add_plugin_dock_widget("slerir", "Restore")
    widget._image.value = layer

    def direct() -> float:
        start = time.perf_counter()
        restorer.restore(image)
        return time.perf_counter() - start

    def through_widget() -> float:
        STATE._plans.clear()  # plan again, like the direct call
        start = time.perf_counter()
        widget.run()
        widget.wait(3_600_000)
        elapsed = time.perf_counter() - start
        assert "bench (restored)" in viewer.layers, widget.status
        inside.append(viewer.layers["bench (restored)"].metadata["slerir"]["seconds"])
        return elapsed

    inside: list[float] = []  # the worker's own restore time (tiles only, planning excluded)
    direct()
    through_widget()  # warm-up: first-call allocations, the worker thread pool
    inside.clear()
    times: dict[str, list[float]] = {"direct": [], "widget": []}
    for _ in range(args.rounds):
        times["direct"].append(direct())
        times["widget"].append(through_widget())

    d, w = statistics.median(times["direct"]), statistics.median(times["widget"])
    print(f"model: {restorer.describe()}")
    print(
        f"image: {args.size}x{args.size} RGB uint8, tile {restorer.config.tile}, torch threads {threads}, "
        f"{args.rounds} rounds (medians)"
    )
    print(f"direct Restorer.restore : {d:8.3f} s   ({', '.join(f'{t:.3f}' for t in times['direct'])})")
    print(f"Restore widget          : {w:8.3f} s   ({', '.join(f'{t:.3f}' for t in times['widget'])})")
    print(f"  of which tiles in worker: {statistics.median(inside):6.3f} s")
    print(f"ratio widget / direct   : {w / d:8.3f}   (target <= 1.10)")
    viewer.close()


if __name__ == "__main__":
    main()
