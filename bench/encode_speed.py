"""Query-encoding benchmark: all-MiniLM-L6-v2 on torch (MiniLMTextEncoder) against ONNX Runtime (OnnxMiniLMTextEncoder).

Both encoders run in this process on the CPU, through their public `encode_text` (tokenising included), interleaved
call by call with the order alternating, so load from other processes hits them alike:

  * latency: one query of exactly 77 word pieces ([CLS] and [SEP] included) per call, 1 thread each
    (torch.set_num_threads(1), ORT intra_op_num_threads=1); p50 and p99 over --queries calls after a warm-up;
  * throughput: --texts card-like texts of ~170 words (most reach the 256-piece limit) at batch 64, 2 threads each;
    texts/s over the whole set, chunk by chunk (one chunk of 64 to torch, the same chunk to ONNX, ...).

The ONNX graph is exported first into --cache-dir (a fresh temporary folder by default, so the one-time export's
seconds and megabytes are measured too). int8 is not benchmarked: dynamic int8 quantisation moved vectors by up to
0.10 in cosine (see embedding/onnx_minilm.py), so the product keeps float32. Ends with one JSON line.

    python bench/encode_speed.py [--queries 300] [--texts 2000] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

QUERY_TOKENS = 77
CARD_WORDS = 170
BATCH = 64
WARMUP = 10

_SUBJECTS = ("a knight", "an old fisherman", "a red fox", "a cyberpunk girl", "a gothic cathedral", "a tiny island",
             "a samurai", "a witch's cottage", "a steam locomotive", "a koi pond", "a desert caravan", "a robot chef")
_STYLES = ("oil painting", "watercolor", "anime screencap", "35mm film photo", "isometric render", "ink wash",
           "studio portrait", "concept art", "pixel art", "charcoal sketch", "octane render", "ukiyo-e print")
_DETAILS = ("volumetric fog", "rim lighting", "bokeh", "intricate details", "soft pastel colors", "golden hour",
            "dramatic shadows", "8k uhd", "film grain", "highly detailed skin", "depth of field", "rain reflections")
_CARD_SENTENCES = (
    "This LoRA was trained on {n} hand-picked images and captioned by hand.",
    "Use the trigger word {w} at a weight between 0.6 and 0.9.",
    "It works best on SDXL 1.0 base and on realistic merges, and poorly on anime checkpoints.",
    "Recommended sampler DPM++ 2M Karras, {n} steps, CFG 5 to 7, hires fix at 1.5x with a denoise of 0.35.",
    "Negative prompt: lowres, blurry, watermark, text, extra fingers.",
    "Known issue: {d} sometimes takes over the whole image; lower the weight or add a counter term.",
    "Version {n} retrained with more close-ups of {s} in the style of {t}.",
    "The checkpoint is a merge tuned for {t}, strong on {d} and weak on hands.",
    "Example prompt: {s}, {t}, {d}, masterpiece, best quality.",
    "Thanks to everyone who shared generations in the gallery, especially the {t} ones.",
)


def query_prompt(tokenizer, rng: random.Random) -> str:
    """A comma-separated prompt of exactly QUERY_TOKENS word pieces, [CLS] and [SEP] included."""
    parts: list[str] = []
    while True:
        candidate = ", ".join(parts + [rng.choice(_SUBJECTS + _STYLES + _DETAILS)])
        if len(tokenizer(candidate)["input_ids"]) > QUERY_TOKENS:
            break
        parts.append(candidate.rsplit(", ", 1)[-1])
    words = ", ".join(parts).split(" ")
    while len(tokenizer(" ".join(words))["input_ids"]) < QUERY_TOKENS:
        words.append("art")
    text = " ".join(words)
    assert len(tokenizer(text)["input_ids"]) == QUERY_TOKENS, len(tokenizer(text)["input_ids"])
    return text


def card_text(rng: random.Random) -> str:
    """A model card of about CARD_WORDS words."""
    words: list[str] = []
    while len(words) < CARD_WORDS:
        sentence = rng.choice(_CARD_SENTENCES).format(
            n=rng.randint(2, 900), w=f"zk{rng.randint(100, 999)}", s=rng.choice(_SUBJECTS), t=rng.choice(_STYLES),
            d=rng.choice(_DETAILS))
        words.extend(sentence.split())
    return " ".join(words[:CARD_WORDS])


def percentile_ms(samples: list[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(samples) * 1e3, q)), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--cache-dir", type=Path, default=None, help="ONNX export folder (default: a fresh temp dir)")
    args = parser.parse_args()
    if args.cache_dir is None:
        with tempfile.TemporaryDirectory(prefix="zoo-bench-onnx-") as scratch:  # 90 MB export, deleted afterwards
            run(args, Path(scratch))
    else:
        run(args, args.cache_dir)


def run(args: argparse.Namespace, cache_dir: Path) -> None:
    import torch

    from embedding.encoders import MiniLMTextEncoder
    from embedding.onnx_minilm import MODEL_FILE, OnnxMiniLMTextEncoder, export_folder, read_marker

    exported_now = read_marker(export_folder(cache_dir)) is None
    started = time.perf_counter()
    onnx_1 = OnnxMiniLMTextEncoder(cache_dir, intra_op_threads=1)
    first_load_s = time.perf_counter() - started
    marker = read_marker(onnx_1.folder) or {}
    started = time.perf_counter()
    onnx_2 = OnnxMiniLMTextEncoder(cache_dir, intra_op_threads=2, batch_size=BATCH)
    onnx_load_s = time.perf_counter() - started
    started = time.perf_counter()
    torch_enc = MiniLMTextEncoder(device="cpu", batch_size=BATCH)
    torch_load_s = time.perf_counter() - started
    export_mb = round((onnx_1.folder / MODEL_FILE).stat().st_size / 1e6, 1)
    made = "exported now" if exported_now else "reused; the export itself took"
    print(f"export folder {onnx_1.folder}: {export_mb} MB; first ONNX load {first_load_s:.1f} s "
          f"({made}: export {marker.get('export_seconds')} s + check {marker.get('check_seconds')} s); "
          f"later ONNX load {onnx_load_s:.2f} s; torch load {torch_load_s:.2f} s")

    rng = random.Random(20240610)
    query = query_prompt(torch_enc._tokenizer, rng)

    # --- latency: 1 thread, one 77-piece query per call, interleaved with alternating order ---------------------
    torch.set_num_threads(1)
    single = {"torch": lambda: torch_enc.encode_text([query]), "onnx": lambda: onnx_1.encode_text([query])}
    latency: dict[str, list[float]] = {name: [] for name in single}
    for i in range(WARMUP + args.queries):
        for name in (("torch", "onnx") if i % 2 == 0 else ("onnx", "torch")):
            t0 = time.perf_counter()
            single[name]()
            if i >= WARMUP:
                latency[name].append(time.perf_counter() - t0)
    query_cos = float(single["torch"]()[0] @ single["onnx"]()[0])

    # --- throughput: 2 threads, batch 64, the same chunks interleaved -----------------------------------------------
    torch.set_num_threads(2)
    texts = [card_text(rng) for _ in range(args.texts)]
    pieces = [len(ids) for ids in torch_enc._tokenizer(texts[:200])["input_ids"]]
    torch_enc.encode_text(texts[:BATCH]), onnx_2.encode_text(texts[:BATCH])  # warm-up
    spent = {"torch": 0.0, "onnx": 0.0}
    vectors: dict[str, list[np.ndarray]] = {"torch": [], "onnx": []}
    encoders = {"torch": torch_enc, "onnx": onnx_2}
    for k, start in enumerate(range(0, len(texts), BATCH)):
        chunk = texts[start:start + BATCH]
        for name in (("torch", "onnx") if k % 2 == 0 else ("onnx", "torch")):
            t0 = time.perf_counter()
            vectors[name].append(encoders[name].encode_text(chunk))
            spent[name] += time.perf_counter() - t0
    t_vec, o_vec = (np.concatenate(vectors[name]) for name in ("torch", "onnx"))
    card_worst_cos = float((t_vec.astype(np.float64) * o_vec).sum(axis=1).min())
    throughput = {name: len(texts) / spent[name] for name in spent}

    rows = {name: {"p50_ms": percentile_ms(latency[name], 50), "p99_ms": percentile_ms(latency[name], 99),
                   "texts_per_s": round(throughput[name], 1)} for name in ("torch", "onnx")}
    print(f"\nquery: {QUERY_TOKENS} word pieces, 1 thread, {args.queries} calls each; cards: {len(texts)} texts of "
          f"{CARD_WORDS} words (median {int(np.median(pieces))} pieces, max 256 after truncation), batch {BATCH}, "
          f"2 threads; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'encoder':<16}{'p50 ms':>10}{'p99 ms':>10}{'texts/s':>10}")
    for name, label in (("torch", "torch fp32"), ("onnx", "onnxruntime fp32")):
        r = rows[name]
        print(f"{label:<16}{r['p50_ms']:>10}{r['p99_ms']:>10}{r['texts_per_s']:>10}")
    ratios = {"p50_speedup": round(rows["torch"]["p50_ms"] / rows["onnx"]["p50_ms"], 2),
              "p99_speedup": round(rows["torch"]["p99_ms"] / rows["onnx"]["p99_ms"], 2),
              "throughput_speedup": round(throughput["onnx"] / throughput["torch"], 2)}
    print(f"ONNX over torch: p50 x{ratios['p50_speedup']}, p99 x{ratios['p99_speedup']}, "
          f"throughput x{ratios['throughput_speedup']}; worst cosine torch vs ONNX: query {query_cos:.7f}, "
          f"cards {card_worst_cos:.7f}")
    print(json.dumps({
        "bench": "encode", "model": "all-MiniLM-L6-v2", "query_tokens": QUERY_TOKENS, "queries": args.queries,
        "cards": len(texts), "card_words": CARD_WORDS, "batch": BATCH, "latency_threads": 1, "batch_threads": 2,
        "torch": rows["torch"], "onnx_fp32": rows["onnx"], "int8": "rejected (cosine)", **ratios,
        "query_cosine": round(query_cos, 7), "cards_worst_cosine": round(card_worst_cos, 7),
        "exported_now": exported_now, "export_mb": export_mb, "export_s": marker.get("export_seconds"), "export_check_s": marker.get("check_seconds"),
        "first_onnx_load_s": round(first_load_s, 2), "onnx_load_s": round(onnx_load_s, 2),
        "torch_load_s": round(torch_load_s, 2), "cpus": os.cpu_count(), "load_avg": round(os.getloadavg()[0], 1),
    }))


if __name__ == "__main__":
    main()
