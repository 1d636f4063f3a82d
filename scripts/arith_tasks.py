"""Multi-step arithmetic word problems for the bundled tiny model: what it is trained on and what
`trtx eval` grades it on. Every problem has one integer answer that a reader can check by hand, and
the target text shows the working, one step at a time:

    prompt:  "Ann has 23 coins. She finds 15 more. She loses 7. How many coins does Ann have?\n"
    target:  "23+15=38. 38-7=31. Answer: 31"

    python scripts/arith_tasks.py --out models/tiny-arith/eval.jsonl --n 600 --seed 2   # the eval set
"""
from __future__ import annotations

import argparse
import json
import random

NAMES = [("Ann", "She"), ("Tom", "He"), ("Eve", "She"), ("Max", "He"), ("Zoe", "She"), ("Ben", "He"),
         ("Kim", "She"), ("Sam", "He"), ("Lia", "She"), ("Raj", "He")]
ITEMS = ["coins", "apples", "books", "cards", "eggs", "pens", "cups", "stones", "shells", "stamps"]
GAIN = ["buys {n} more", "finds {n} more", "gets {n} more", "wins {n} more"]
LOSS = ["loses {n}", "gives away {n}", "sells {n}", "drops {n}"]
TIMES = {2: "doubles them", 3: "triples them"}


def make_problem(rng: random.Random, steps: int) -> dict:
    name, pron = rng.choice(NAMES)
    item = rng.choice(ITEMS)
    value = rng.randint(2, 59)
    text = [f"{name} has {value} {item}."]
    work = []
    for _ in range(steps):
        kind = rng.choices(["gain", "loss", "times"], weights=[4, 4, 1 if value < 200 else 0])[0]
        if kind == "loss" and value < 2:
            kind = "gain"
        if kind == "gain":
            n = rng.randint(1, 49)
            text.append(f"{pron} {rng.choice(GAIN).format(n=n)}.")
            work.append(f"{value}+{n}={value + n}.")
            value += n
        elif kind == "loss":
            n = rng.randint(1, min(value, 49))
            text.append(f"{pron} {rng.choice(LOSS).format(n=n)}.")
            work.append(f"{value}-{n}={value - n}.")
            value -= n
        else:
            n = rng.choice([2, 3])
            text.append(f"{pron} {TIMES[n]}.")
            work.append(f"{value}*{n}={value * n}.")
            value *= n
    text.append(f"How many {item} does {name} have?")
    return {"prompt": " ".join(text) + "\n", "target": " ".join(work) + f" Answer: {value}", "answer": value}


def make_problems(n: int, seed: int, steps=(1, 2, 3)) -> list[dict]:
    rng = random.Random(seed)
    return [make_problem(rng, rng.choice(steps)) for _ in range(n)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--seed", type=int, default=2)
    args = ap.parse_args()
    with open(args.out, "w") as f:
        for p in make_problems(args.n, args.seed):
            f.write(json.dumps(p) + "\n")


if __name__ == "__main__":
    main()
