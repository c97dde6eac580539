"""Saliency cost per case, as a ratio to one forward+backward pass of the same model, and peak memory.

Each (input, method) runs in a fresh process: the baseline (one forward+backward at batch 1, best of
3 after a warm-up) and the method (best of ``--repeats``) are timed in that same process, and peak
memory is the process's resident-set growth (CPU) or ``torch.cuda.max_memory_allocated`` (CUDA).
Targets: GradCAM <= 3x, integrated gradients with 32 steps <= 40x.

    python benchmarks/saliency.py [--inputs 2d64,3d32,3d64] [--methods ...] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time, torch
from pipeline.explain.attribution import AttributionConfig, attribute
from pipeline.models import build_classifier
from pipeline.preprocess import PreprocessConfig
dims, size, method, device, repeats = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
torch.manual_seed(0)
model = build_classifier(2, PreprocessConfig(dims=dims, input_size=(size,) * dims)).network.to(device).eval()
x = torch.rand(1, 1, *(size,) * dims, device=device)
def sync():
    if device == "cuda":
        torch.cuda.synchronize()
def pass_once():
    y = x.clone().requires_grad_(True)
    model(y)[0, 1].backward()
    sync()
def best(fn, n):
    times = []
    for _ in range(n):
        start = time.perf_counter(); fn(); times.append(time.perf_counter() - start)
    return min(times)
pass_once()
baseline = best(pass_once, 3)
rss_before = int(open('/proc/self/statm').read().split()[1]) * 4096
if device == "cuda":
    torch.cuda.reset_peak_memory_stats()
cfg = AttributionConfig(ig_steps=32, occlusion_window=max(2, size // 8), occlusion_stride=max(2, size // 8),
                        perturbations_per_eval=16)
seconds = best(lambda: (attribute(model, x, 1, method, cfg), sync()), repeats)
if device == "cuda":
    peak = torch.cuda.max_memory_allocated() / 2**20
else:
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before) / 2**20
print(json.dumps({"baseline_s": baseline, "seconds": seconds, "peak_mb": peak}))
"""

TARGETS = {"gradcam": 3.0, "integrated_gradients": 40.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", default="2d64,3d32,3d64", help="comma-separated <dims>d<edge> inputs")
    parser.add_argument("--methods", default="gradcam,saliency,integrated_gradients,occlusion")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"{'input':8} {'method':22} {'pass (s)':>9} {'method (s)':>11} {'ratio':>7} {'peak MB':>9}  target")
    failures = 0
    for spec in args.inputs.split(","):
        dims, size = int(spec[0]), int(spec.split("d")[1])
        for method in args.methods.split(","):
            run = subprocess.run([sys.executable, "-c", CHILD, str(dims), str(size), method, args.device, str(args.repeats)],
                                 capture_output=True, text=True)
            if run.returncode != 0:
                print(f"{spec:8} {method:22} failed: {run.stderr.strip().splitlines()[-1]}")
                failures += 1
                continue
            r = json.loads(run.stdout.strip().splitlines()[-1])
            ratio = r["seconds"] / r["baseline_s"]
            target = TARGETS.get(method)
            verdict = "" if target is None else f"<= {target:g}x: {'met' if ratio <= target else 'NOT met'}"
            print(f"{spec:8} {method:22} {r['baseline_s']:9.3f} {r['seconds']:11.3f} {ratio:6.1f}x {r['peak_mb']:9.0f}  {verdict}",
                  flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
