"""Generation benchmark: cold single-file load vs warm generation vs LoRA adapter swap, side by side in one run.

What the pipeline manager promises: a warm request pays nothing for loading, and switching the LoRA set between
requests (adapters already cached on the pipeline, `set_adapters`) costs a small fraction of one generation. Measured
against the obvious alternatives: loading the checkpoint for every request, and unloading/reloading LoRA files for
every request (no adapter cache).

    python bench/generate.py                       # tiny random SD 1.5-topology checkpoint, CPU (runs anywhere)
    python bench/generate.py --size 64 --steps 4 --repeats 5
    python bench/generate.py --checkpoint model.safetensors --lora a.safetensors --lora b.safetensors \\
        --size 512 --steps 25                      # real size as well, when CUDA is available

Prints one table and ends with exactly one JSON line of headline figures (for the real-size run when there was one).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


@dataclass(frozen=True)
class Setup:
    """What every request of a run shares: the checkpoint (and its hash), size, steps, scheduler, device."""

    config_dir: Path
    checkpoint: Path
    sha256: str
    size: int
    steps: int
    device: str | None
    scheduler: str

    def request(self, manager, lora_set, seed=1):
        from serving.studio.generate import generate

        return generate(manager, checkpoint_path=self.checkpoint, checkpoint_sha256=self.sha256, loras=lora_set,
                        prompt="a watercolor castle on a hill at sunset", negative_prompt="blurry, lowres",
                        steps=self.steps, cfg=7.0, seed=seed, width=self.size, height=self.size,
                        scheduler=self.scheduler)

    def manager(self):
        from serving.studio.pipelines import PipelineManager

        return PipelineManager(self.config_dir, device=self.device, max_pipelines=1)


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def measure_cold(setup: Setup, set_a: list, repeats: int) -> tuple[list[float], list[float]]:
    """Single file -> warm pipeline, and the first load of a LoRA set on it (a fresh manager each time, so nothing
    is cached in-process but the OS page cache, as for any second load of a file)."""
    cold, first_lora = [], []
    for _ in range(max(1, min(repeats, 3))):
        manager = setup.manager()
        t0 = time.perf_counter()
        entry, _ = manager.get(setup.checkpoint, setup.sha256)
        _sync()
        cold.append(time.perf_counter() - t0)
        if set_a:
            first_lora.append(manager.set_loras(entry, set_a)["lora_load_s"])
        del manager, entry
    return cold, first_lora


def measure_warm(setup: Setup, manager, set_a: list, set_b: list, repeats: int) -> dict[str, list[float] | float]:
    """Interleaved, so that machine noise hits both alike: A A B B A A B B ... Each request after a change of set
    pays the swap inside its own set_loras (lora_set_s); the others keep their set."""
    warm, warm_total, swap_total, swaps, warm_load_paid = [], [], [], [], 0.0
    previous = set_b
    for i in range(repeats):
        for lora_set in (set_a, set_a, set_b, set_b):
            r = setup.request(manager, lora_set, seed=i)
            warm_load_paid += r.timings["load_s"] + r.timings["lora_load_s"]
            if lora_set is previous:
                warm.append(r.timings["generate_s"])
                warm_total.append(r.timings["total_s"])
            else:
                swaps.append(r.timings["lora_set_s"])
                swap_total.append(r.timings["total_s"])
            previous = lora_set
    return {"warm": warm, "warm_total": warm_total, "swaps": swaps, "swap_total": swap_total,
            "warm_load_paid": warm_load_paid}


def measure_reload(manager, entry, set_a: list, set_b: list, repeats: int) -> list[float]:
    """The obvious alternative to the adapter cache: unload every LoRA and load the request's files again."""
    reload_lora = []
    for i in range(max(1, min(repeats, 3))):
        lora_set = set_b if i % 2 == 0 else set_a
        t0 = time.perf_counter()
        entry.pipe.unload_lora_weights()
        entry.adapters.clear()
        entry.active = ()
        manager.set_loras(entry, lora_set)
        _sync()
        reload_lora.append(time.perf_counter() - t0)
    return reload_lora


def measure(config_dir: Path, checkpoint: Path, loras: list[Path], *, size: int, steps: int, repeats: int,
            device: str | None, scheduler: str) -> dict:
    from serving.studio.generate import LoraUse
    from serving.studio.model_files import file_sha256

    setup = Setup(config_dir, checkpoint, file_sha256(checkpoint), size, steps, device, scheduler)
    uses = [LoraUse(p.stem, p, file_sha256(p), 0.8) for p in loras]
    # Two LoRA sets to swap between: first half vs second half (one LoRA: it vs none).
    half = max(1, len(uses) // 2)
    set_a = uses[:half]
    set_b = [LoraUse(u.name, u.path, u.sha256, 0.6) for u in uses[half:]] if len(uses) > 1 else []

    cold, first_lora = measure_cold(setup, set_a, repeats)
    manager = setup.manager()
    setup.request(manager, set_a)  # cold request + warm-up (first-call kernels, allocator)
    setup.request(manager, set_b)  # every adapter of both sets now cached on the pipeline
    entry, _ = manager.get(checkpoint, setup.sha256)
    warm = measure_warm(setup, manager, set_a, set_b, repeats)
    reload_lora = measure_reload(manager, entry, set_a, set_b, repeats)

    gen = _median(warm["warm"])
    return {
        "cold_load_s": _median(cold),
        "first_lora_load_s": _median(first_lora) if first_lora else 0.0,
        "warm_generate_s": gen,
        "swap_s": _median(warm["swaps"]),
        "warm_request_s": _median(warm["warm_total"]),
        "request_after_swap_s": _median(warm["swap_total"]),
        "lora_reload_s": _median(reload_lora),
        "warm_load_paid_s": warm["warm_load_paid"],
        "checkpoint_loads_warm_phase": manager.loads,
        "swap_over_generate": _median(warm["swaps"]) / gen,
        "load_over_generate": _median(cold) / gen,
        "lora_reload_over_swap": _median(reload_lora) / max(_median(warm["swaps"]), 1e-9),
        "n_loras": len(uses),
    }


def print_table(title: str, m: dict) -> None:
    gen = m["warm_generate_s"]
    rows = [
        ("cold load: single file -> warm pipeline", m["cold_load_s"]),
        ("first load of the LoRA set (files -> adapters)", m["first_lora_load_s"]),
        ("warm generation (nothing loaded)", gen),
        ("adapter swap (set_adapters, cached)", m["swap_s"]),
        ("request, same LoRA set (total)", m["warm_request_s"]),
        ("request, other LoRA set (total, incl. swap)", m["request_after_swap_s"]),
        ("alternative: unload + reload LoRA files", m["lora_reload_s"]),
    ]
    print(f"\n{title}")
    print(f"{'step':<50}{'seconds':>10}{'/ generation':>14}")
    for name, seconds in rows:
        print(f"{name:<50}{seconds:>10.4f}{seconds / gen:>14.3f}")
    ok_swap = "ok" if m["swap_over_generate"] < 0.10 else "MISSED"
    ok_warm = "ok" if m["warm_load_paid_s"] == 0.0 else "MISSED"
    print(f"swap / generation: {m['swap_over_generate']:.3f} (target < 0.10: {ok_swap});  "
          f"load / generation: {m['load_over_generate']:.2f};  reload LoRAs / swap: {m['lora_reload_over_swap']:.1f}x")
    print(f"load paid by warm requests: {m['warm_load_paid_s']:.4f} s (target 0: {ok_warm}); "
          f"checkpoint loads in the warm phase: {m['checkpoint_loads_warm_phase']}")


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="tiny run: image side in pixels (multiple of 64)")
    parser.add_argument("--steps", type=int, default=4, help="tiny run: denoising steps")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scheduler", default="euler")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for the tiny run (tiny models: 1)")
    parser.add_argument("--checkpoint", type=Path, help="a real SD 1.5 .safetensors checkpoint (real-size run)")
    parser.add_argument("--lora", type=Path, action="append", default=[], help="a real SD 1.5 LoRA (repeatable)")
    parser.add_argument("--real-size", type=int, default=512)
    parser.add_argument("--real-steps", type=int, default=25)
    parser.add_argument("--device", help="force a device for the real-size run (default: cuda when available)")
    parser.add_argument("--workdir", type=Path, help="where the configs and tiny files go (default: a temp dir)")
    return parser.parse_args()


def _rounded(figures: dict) -> dict:
    return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in figures.items()}


def tiny_run(args: argparse.Namespace, workdir: Path) -> dict:
    """A random SD 1.5-topology checkpoint in the original single-file layout and four kohya LoRAs (two sets of
    two), on the CPU."""
    import torch

    from serving.studio import sd_components as sdc
    from testkit import tiny_sd

    threads_before = torch.get_num_threads()
    torch.set_num_threads(max(1, args.threads))
    tiny_config = sdc.write_sd15_config(workdir / "tiny-config", "tiny")
    pipe = tiny_sd.build_random_pipeline(tiny_config, seed=0)
    ckpt = tiny_sd.save_single_file(pipe, workdir / "tiny.safetensors")
    loras = [tiny_sd.write_random_kohya_lora(pipe, workdir / f"tiny-lora-{i}.safetensors", seed=i + 1)
             for i in range(4)]
    del pipe
    tiny = measure(tiny_config, ckpt, loras, size=args.size, steps=args.steps, repeats=args.repeats,
                   device="cpu", scheduler=args.scheduler)
    torch.set_num_threads(threads_before)
    print_table(f"tiny SD 1.5 topology, cpu ({args.threads} thread), {args.size}px, {args.steps} steps, "
                f"{tiny['n_loras']} LoRAs in two sets", tiny)
    return tiny


def real_run(args: argparse.Namespace, workdir: Path) -> dict | None:
    """A real checkpoint and LoRAs, when given and when there is a GPU (or a device is forced)."""
    import torch

    from serving.studio import sd_components as sdc

    device = args.device or ("cuda" if torch.cuda.is_available() else None)
    missing = [p for p in [args.checkpoint, *args.lora] if not p.is_file()]
    if missing:
        print(f"\nreal-size run skipped: not found: {', '.join(map(str, missing))}")
        return None
    if device is None:
        print("\nreal-size run skipped: no CUDA device (pass --device cpu to force it)")
        return None
    config = sdc.write_sd15_config(workdir / "sd15-config", "sd15")
    real = measure(config, args.checkpoint, list(args.lora), size=args.real_size, steps=args.real_steps,
                   repeats=max(2, min(args.repeats, 3)), device=device, scheduler="dpm++_2m_karras")
    print_table(f"real: {args.checkpoint.name}, {device}, {args.real_size}px, {args.real_steps} steps, "
                f"{real['n_loras']} LoRAs", real)
    return {"bench": "generate", "device": device, "model": args.checkpoint.name, "size": args.real_size,
            "steps": args.real_steps, **_rounded(real)}


def main() -> None:
    args = _arguments()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="zoo-bench-gen-"))
    tiny = tiny_run(args, workdir)
    headline = {"bench": "generate", "device": "cpu", "model": "tiny", "size": args.size, "steps": args.steps,
                **_rounded(tiny)}
    real = real_run(args, workdir) if args.checkpoint else None
    if real is not None:
        headline = {**real, "tiny_swap_over_generate": round(tiny["swap_over_generate"], 5)}
    print(json.dumps(headline))


if __name__ == "__main__":
    main()
