"""Rerank benchmark: tree scoring against one-by-one scoring and one listwise prompt, on SmolLM2-135M.

A prompt of P prefix tokens and N candidates of L branch tokens each; per N, the three are timed side by side in one
process (a warm-up first, then repeats in rotating order, medians of this process's CPU time by default, since wall
time on a shared machine measures the neighbours too), both tree layouts ("cache", "packed"), and tree_rerank with
pruning rounds (every candidate read at a quarter of its tokens, the best quarter re-read in full: not exact against
one full read, so the table also says how much of the full-budget top 5 it keeps). The exact work ceiling of any
shared-prefix scheme over separate forwards is N(P+L)/(P+N*L). Prints one table and ends
with one JSON line (the N=32 row as headline, all rows under "rows").

    python bench/rerank.py [--n 8 32 100] [--prefix-tokens 200] [--candidate-tokens 150] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORDS = ("soft light watercolor portrait detailed anime girl city neon rain cinematic forest castle armor dragon "
         "glowing eyes ink sketch vintage film grain knight cat dog sunset ocean robot flower dress hat red blue "
         "green golden silver night snow mountain river painting photo character texture lighting shadow fantasy "
         "medieval futuristic street market festival lantern temple garden bridge storm cloud").split()


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def build_inputs(tok, prefix_tokens: int, candidate_tokens: int, n: int, seed: int = 0):
    """A prompt whose prefix is about `prefix_tokens` long and `n` candidates whose branches are `candidate_tokens`
    long (descriptions longer than the budget, cut by it); returns (prompt, candidates, budget, P, mean L)."""
    from serving.search.rerank import Candidate, token_lengths

    rng = random.Random(seed)
    pool = [rng.choice(WORDS) for _ in range(prefix_tokens * 2)]
    low, high = 0, len(pool)
    while low < high:  # the most prompt words whose prefix still fits in prefix_tokens
        middle = (low + high + 1) // 2
        if token_lengths(tok, " ".join(pool[:middle]), [], 0)[0] <= prefix_tokens:
            low = middle
        else:
            high = middle - 1
    prompt = " ".join(pool[:low])
    candidates = [Candidate(f"c{i:03d}", f"adapter {i:03d}", "style", _text(rng, candidate_tokens * 2))
                  for i in range(n)]
    empty = token_lengths(tok, prompt, candidates[:1], 0)[1][0]
    budget = max(0, candidate_tokens - empty)
    p, lengths = token_lengths(tok, prompt, candidates, budget)
    return prompt, candidates, budget, p, statistics.mean(lengths)


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of this process, result): CPU time is what survives other jobs on a shared box."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def bench_n(model, tok, n: int, args) -> dict:
    from serving.search.rerank import score_independent, score_listwise, score_tree, tree_rerank

    prompt, candidates, budget, p, mean_l = build_inputs(tok, args.prefix_tokens, args.candidate_tokens, n)
    rounds = pruned_rounds(budget)
    runs = {
        "independent": lambda: score_independent(model, tok, prompt, candidates, budget),
        "cache": lambda: score_tree(model, tok, prompt, candidates, budget, method="cache",
                                    batch_size=args.batch_size),
        "packed": lambda: score_tree(model, tok, prompt, candidates, budget, method="packed",
                                     batch_size=args.pack_size),
        "listwise": lambda: score_listwise(model, tok, prompt, candidates, budget=budget),
        "rounds": lambda: tree_rerank(model, tok, prompt, candidates, rounds, method=args.method,
                                      batch_size=args.batch_size if args.method == "cache" else args.pack_size),
    }
    times: dict[str, dict[str, list[float]]] = {clock: {name: [] for name in runs} for clock in ("wall", "cpu")}
    results: dict[str, object] = {}
    names = list(runs)
    for repeat in range(args.repeats):
        for name in names[repeat % len(names):] + names[: repeat % len(names)]:  # rotate: no method always first
            if name == "listwise" and times["wall"][name] and n > args.listwise_once_above:
                continue
            wall, cpu, results[name] = timed(runs[name])
            times["wall"][name].append(wall)
            times["cpu"][name].append(cpu)
            print(f"  n={n} {name:<11} wall {wall:8.2f} s  cpu {cpu:8.2f} s", file=sys.stderr, flush=True)
    medians = {clock: {name: statistics.median(v) for name, v in by_name.items()} for clock, by_name in times.items()}
    median = medians[args.clock]
    tree = median[args.method]
    ceiling = n * (p + mean_l) / (p + n * mean_l)
    diffs = {m: max(abs(a - b) for a, b in zip(results[m], results["independent"], strict=True))
             for m in ("cache", "packed")}
    full = results["independent"]
    best = set(sorted(range(n), key=lambda i: -full[i])[:TOP])
    pruned_top = {candidates.index(r.candidate) for r in results["rounds"][:TOP]}
    return {
        "n": n, "prefix_tokens": p, "candidate_tokens": round(mean_l, 1),
        "independent_s": round(median["independent"], 3), "listwise_s": round(median["listwise"], 3),
        "tree_cache_s": round(median["cache"], 3), "tree_packed_s": round(median["packed"], 3),
        "method": args.method, "speedup": round(median["independent"] / tree, 3), "ceiling": round(ceiling, 3),
        "fraction_of_ceiling": round(median["independent"] / tree / ceiling, 3),
        "speedup_vs_listwise": round(median["listwise"] / tree, 2),
        "max_abs_diff": float(f"{diffs[args.method]:.2g}"), "max_abs_diff_packed": float(f"{diffs['packed']:.2g}"),
        "listwise_runs": len(times["wall"]["listwise"]), "clock": args.clock,
        "speedup_wall": round(medians["wall"]["independent"] / medians["wall"][args.method], 3),
        "rounds": [list(r) for r in rounds], "tree_rounds_s": round(median["rounds"], 3),
        "rounds_speedup_vs_listwise": round(median["listwise"] / median["rounds"], 2),
        "rounds_top_agreement": round(len(best & pruned_top) / len(best), 2),
    }


TOP = 5  # how many of the full-budget top candidates the pruned rounds must keep at their top


def pruned_rounds(budget: int) -> tuple[tuple[int, float], ...]:
    """The product's way to spend the budget: every candidate read at a quarter of it, the best quarter re-read
    in full (serving.search.rerank.tree_rerank); timed beside the exact one-round scorers."""
    return ((max(1, budget // 4), 0.25), (budget, 1.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[8, 32, 100], help="numbers of candidates")
    parser.add_argument("--prefix-tokens", type=int, default=200)
    parser.add_argument("--candidate-tokens", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--method", choices=["cache", "packed"], default="cache",
                        help="the tree layout of the headline")
    parser.add_argument("--batch-size", type=int, default=None, help="branches per forward (cache layout)")
    parser.add_argument("--pack-size", type=int, default=None, help="branches per forward (packed layout)")
    parser.add_argument("--listwise-once-above", type=int, default=50, help="time listwise once beyond this N")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu",
                        help="what the table compares: this process's CPU time (steady on a shared machine) or wall "
                             "time (both are recorded)")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="converted SmolLM2 folder (default: $ZOO_HOME/models/smollm2-135m-instruct)")
    args = parser.parse_args()
    if min(args.n) < 1 or args.repeats < 1 or args.prefix_tokens < 1 or args.candidate_tokens < 1:
        parser.error("--n, --repeats, --prefix-tokens and --candidate-tokens must be positive")

    import torch

    from config import Settings
    from serving.search.llm import ModelNotInstalled, load_smollm2, smollm2_dir

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model, tok = load_smollm2(args.model_dir or smollm2_dir(Settings.from_env().zoo_home), device="cpu")
    except ModelNotInstalled as missing:
        print(f"skipped: {missing}")
        print(json.dumps({"bench": "rerank", "skipped": str(missing)}))
        return

    from serving.search.rerank import score_independent, score_listwise, score_tree

    prompt, warm, budget, _, _ = build_inputs(tok, args.prefix_tokens, args.candidate_tokens, 2)
    for method in ("cache", "packed"):
        score_tree(model, tok, prompt, warm, budget, method=method)
    score_independent(model, tok, prompt, warm, budget)
    score_listwise(model, tok, prompt, warm, max_new_tokens=4, budget=budget)

    rows = [bench_n(model, tok, n, args) for n in args.n]
    print(f"SmolLM2-135M float32, CPU threads {torch.get_num_threads()}, tree layout {args.method}, {args.clock} "
          f"seconds, median of {args.repeats} (listwise once when N > {args.listwise_once_above})")
    print(f"{'N':>4} {'P':>4} {'L':>6} {'indep s':>9} {'listwise s':>11} {'cache s':>8} {'packed s':>9} "
          f"{'speedup':>8} {'ceiling':>8} {'of ceil':>8} {'vs list':>8} {'max|diff|':>10} {'rounds s':>9} "
          f"{'vs list':>8} {f'top{TOP} kept':>10}")
    for r in rows:
        print(f"{r['n']:>4} {r['prefix_tokens']:>4} {r['candidate_tokens']:>6} {r['independent_s']:>9.2f} "
              f"{r['listwise_s']:>11.2f} {r['tree_cache_s']:>8.2f} {r['tree_packed_s']:>9.2f} "
              f"{r['speedup']:>7.2f}x {r['ceiling']:>7.2f}x {r['fraction_of_ceiling']:>8.0%} "
              f"{r['speedup_vs_listwise']:>7.1f}x {r['max_abs_diff']:>10.1e} {r['tree_rounds_s']:>9.2f} "
              f"{r['rounds_speedup_vs_listwise']:>7.1f}x {r['rounds_top_agreement']:>10.0%}")
    print(f"rounds: tree_rerank with {rows[0]['rounds']} (budget, keep): every candidate at a quarter of its tokens, "
          f"the best quarter again in full; 'top{TOP} kept' = share of the full-budget top {TOP} in its top {TOP}")
    head = next((r for r in rows if r["n"] == 32), rows[0])
    print(json.dumps({"bench": "rerank", "n": head["n"], "speedup": head["speedup"], "ceiling": head["ceiling"],
                      "fraction_of_ceiling": head["fraction_of_ceiling"],
                      "speedup_vs_listwise": head["speedup_vs_listwise"], "max_abs_diff": head["max_abs_diff"],
                      "rounds_speedup_vs_listwise": head["rounds_speedup_vs_listwise"],
                      "rounds_top_agreement": head["rounds_top_agreement"],
                      "method": args.method, "clock": args.clock, "threads": torch.get_num_threads(),
                      "rows": rows}))


if __name__ == "__main__":
    main()
