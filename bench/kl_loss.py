"""Benchmark: the fused-linear KL loss against plain PyTorch, ratios measured in the same run.

CPU (always): Gemma-2-2B's output layer (H = 2304, V = 256,000), N = 2048 tokens, float32, top-k
targets (k = 64, with the tail bucket). "plain" is the reference (``distill.losses.reference``) on
materialised logits: hidden @ weight.T (N, V), log-softmax, KL, autograd. "fused" is
``fused_linear_kl`` on the chunked PyTorch path, the one CPU training runs. Each variant runs in a fresh
Python process, so neither inherits the other's heap:

- peak memory beyond the inputs and their gradients: the child builds the inputs (hidden, weight,
  targets) and touches them, reads its resident set (VmRSS in /proc/self/status), resets the kernel's
  high-water mark (writing 5 to /proc/self/clear_refs; freed heap memory is first returned to the OS
  with malloc_trim, so the baseline is live data), runs forward + backward, and reads the
  high-water mark (VmHWM). Peak beyond = VmHWM - baseline - bytes of the two float32 gradients (N x H
  and V x H), which every implementation must produce. Resident memory is what the machine pays;
  PyTorch's CPU allocator returns large blocks to the OS on free, so it is not inflated by a cache.
- time: wall time of forward + backward (best of --repeats; the first run included, since the CPU
  allocator pays page faults on every run alike).

GPU (only where CUDA is available): N = 8192, H = 2304 and 3584, V = 256,000, bf16, the same top-k
targets: the Triton path against plain PyTorch, ``torch.compile`` of it, Liger-Kernel's fused-linear
JSD (if installed; its API takes the teacher's hidden states, so its time includes the teacher's
logits matmul) and the bare logits matmuls (forward and both backward GEMMs). Time: CUDA events, median
of 5 after 2 warm-ups; memory: torch.cuda.max_memory_allocated beyond inputs and gradients.

Prints one line per measurement, and as its last line one JSON object: at least cpu_peak_mem_ratio
(plain over fused) and cpu_time_ratio (fused over plain).

    python bench/kl_loss.py                     # the issue's shapes (CPU part: several minutes)
    python bench/kl_loss.py --n 512 --vocab 32000 --hidden 256   # a quick look
"""

from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script: the repository's packages, not bench/, come first

import torch

from distill.losses import fused_linear_kl, reference_kl


def zipf_topk_target(n: int, vocab: int, k: int, mass: float, seed: int, device="cpu", rows: int = 256):
    """Top-k targets (ids (n, k) distinct per row, log-probs (n, k) float32) whose k masses follow 1/rank
    and sum to ``mass`` (real caches: the top 64 hold ~0.89 of Gemma's mass). Built a block of rows
    at a time so that building them never holds (n, V)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    ids = torch.cat([torch.rand(min(rows, n - lo), vocab, generator=g).topk(k, dim=1).indices
                     for lo in range(0, n, rows)])
    weights = 1.0 / torch.arange(1, k + 1, dtype=torch.float64)
    logprobs = (mass * weights / weights.sum()).log().float().expand(n, k).contiguous()
    return ids.to(device), logprobs.to(device)


def plain_step(hidden, weight, target, chunk_size):
    loss, _ = reference_kl(hidden @ weight.T, target, kind="topk")
    loss.backward()


def fused_step(hidden, weight, target, chunk_size):
    loss, _ = fused_linear_kl(hidden, weight, target, kind="topk", chunk_size=chunk_size)
    loss.backward()


STEPS = {"plain": plain_step, "fused": fused_step}


# -- CPU: one variant per process ----------------------------------------------------------------
def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _release_free_heap() -> None:
    """Hand memory that is free but still resident in malloc's heap back to the OS (glibc), so the
    baseline counts only live data and the run cannot reuse resident memory unseen."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def cpu_child(args) -> dict:
    torch.manual_seed(0)
    hidden = torch.randn(args.n, args.hidden).requires_grad_()
    weight = (torch.randn(args.vocab, args.hidden) / args.hidden**0.5).requires_grad_()
    target = zipf_topk_target(args.n, args.vocab, args.k, 0.89, seed=1)
    _release_free_heap()
    base = _status_kib("VmRSS")
    reset = _reset_peak()
    times = []
    for _ in range(args.repeats):
        hidden.grad = weight.grad = None  # every run allocates its gradients afresh
        t0 = time.perf_counter()
        STEPS[args.child](hidden, weight, target, args.chunk_size)
        times.append(time.perf_counter() - t0)
    peak = _status_kib("VmHWM")
    grad_bytes = 4 * (hidden.numel() + weight.numel())
    return {"variant": args.child, "seconds": min(times), "all_seconds": times,
            "peak_beyond_bytes": peak * 1024 - base * 1024 - grad_bytes,
            "baseline_bytes": base * 1024, "peak_reset": reset, "threads": torch.get_num_threads()}


def cpu_compare(args) -> dict:
    results = {}
    for variant in ("plain", "fused"):
        cmd = [sys.executable, __file__, "--child", variant, "--n", str(args.n), "--hidden", str(args.hidden),
               "--vocab", str(args.vocab), "--k", str(args.k), "--repeats", str(args.repeats)]
        if args.chunk_size:
            cmd += ["--chunk-size", str(args.chunk_size)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"the {variant} run failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
        r = results[variant]
        print(f"cpu {variant:6s} N={args.n} H={args.hidden} V={args.vocab} k={args.k}: "
              f"{r['seconds']:.1f} s forward+backward, peak {r['peak_beyond_bytes'] / 2**30:.2f} GiB "
              f"beyond inputs and gradients ({r['threads']} threads)", flush=True)
    plain, fused = results["plain"], results["fused"]
    out = {"cpu_peak_mem_ratio": plain["peak_beyond_bytes"] / max(fused["peak_beyond_bytes"], 1),
           "cpu_time_ratio": fused["seconds"] / plain["seconds"],
           "cpu_plain_peak_gib": plain["peak_beyond_bytes"] / 2**30,
           "cpu_fused_peak_gib": fused["peak_beyond_bytes"] / 2**30,
           "cpu_plain_s": plain["seconds"], "cpu_fused_s": fused["seconds"],
           "cpu_shape": {"n": args.n, "hidden": args.hidden, "vocab": args.vocab, "k": args.k},
           "cpu_threads": fused["threads"], "cpu_peak_reset": plain["peak_reset"] and fused["peak_reset"]}
    print(f"cpu ratios: peak memory plain/fused {out['cpu_peak_mem_ratio']:.1f}x, "
          f"time fused/plain {out['cpu_time_ratio']:.2f}x")
    return out


# -- GPU -----------------------------------------------------------------------------------------
def _cuda_time(fn, warmup=2, reps=5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return sorted(times)[len(times) // 2]


def _liger_step():
    """Liger-Kernel's fused-linear JSD (beta 0: forward KL) if it is installed, else None."""
    try:
        from liger_kernel.transformers import LigerFusedLinearJSD
    except ImportError:
        return None
    jsd = LigerFusedLinearJSD(jsd_beta=0.0)

    def step(hidden, weight, teacher_hidden, teacher_weight):
        jsd(hidden, weight, teacher_hidden, teacher_weight).backward()
    return step


def gpu_compare(n: int, sizes: list[int], vocab: int, k: int) -> dict:
    out = {"gpu": torch.cuda.get_device_name()}
    compiled, liger = torch.compile(plain_step), _liger_step()
    for size in sizes:
        out[f"gpu_h{size}"] = gpu_shape(n, size, vocab, k, compiled, liger)
    return out


def gpu_shape(n: int, size: int, vocab: int, k: int, compiled, liger) -> dict:
    dev = "cuda"
    torch.manual_seed(0)
    hidden = torch.randn(n, size, device=dev, dtype=torch.bfloat16).requires_grad_()
    weight = (torch.randn(vocab, size, device=dev) / size**0.5).bfloat16().requires_grad_()
    target = zipf_topk_target(n, vocab, k, 0.89, seed=1, device=dev)
    g_logits = torch.randn(n, vocab, device=dev, dtype=torch.bfloat16)

    def bare():  # the floor: the logits GEMM and both backward GEMMs
        torch.mm(hidden.detach(), weight.detach().T)
        torch.mm(g_logits, weight.detach())
        torch.mm(g_logits.T, hidden.detach())

    variants = {"bare_matmuls": bare,
                "triton": lambda: fused_step(hidden, weight, target, None),
                "plain": lambda: plain_step(hidden, weight, target, None),
                "compiled": lambda: compiled(hidden, weight, target, None)}
    if liger is not None:
        teacher_hidden = torch.randn_like(hidden)
        variants["liger_jsd"] = lambda: liger(hidden, weight, teacher_hidden, weight.detach())
    row = {}
    for name, fn in variants.items():
        hidden.grad = weight.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        try:
            seconds = _cuda_time(fn)
        except Exception as e:  # an alternative that fails (e.g. out of memory) is reported, not fatal
            row[name] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
            print(f"gpu H={size} {name}: failed: {row[name]['error']}", flush=True)
            continue
        grads = 2 * (hidden.numel() + weight.numel()) if name != "bare_matmuls" else 0
        peak = torch.cuda.max_memory_allocated() - base - grads
        row[name] = {"seconds": seconds, "peak_beyond_gib": peak / 2**30}
        print(f"gpu H={size} {name}: {seconds * 1e3:.1f} ms forward+backward, peak {peak / 2**30:.2f} GiB",
              flush=True)
    floor = row["bare_matmuls"].get("seconds")
    for r in row.values():
        if "seconds" in r and floor:
            r["vs_bare_matmuls"] = r["seconds"] / floor
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=2048, help="CPU tokens")
    p.add_argument("--hidden", type=int, default=2304)
    p.add_argument("--vocab", type=int, default=256000)
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--chunk-size", type=int, default=None, help="fused rows per chunk (default: ~128 MiB)")
    p.add_argument("--repeats", type=int, default=1, help="CPU runs per variant (best is reported)")
    p.add_argument("--gpu-n", type=int, default=8192)
    p.add_argument("--gpu-hidden", type=int, nargs="+", default=[2304, 3584])
    p.add_argument("--skip-cpu", action="store_true")
    p.add_argument("--skip-gpu", action="store_true")
    p.add_argument("--child", choices=sorted(STEPS), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(cpu_child(args)))
        return
    result = {} if args.skip_cpu else cpu_compare(args)
    if torch.cuda.is_available() and not args.skip_gpu:
        result.update(gpu_compare(args.gpu_n, args.gpu_hidden, args.vocab, args.k))
    else:
        print("gpu: skipped (" + ("--skip-gpu" if args.skip_gpu else "no CUDA device here") + ")")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
