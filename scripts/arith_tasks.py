"""Multi-step arithmetic word problems for the bundled tiny model: what it is trained on and what
`trtx eval` grades it on. Every problem has one integer answer that a reader can check by hand, and
the target text shows the working, one step at a time:

    prompt:  "Ann has 23 coins. She finds 15 more. She loses 7. How many coins does Ann have?\n"
    target:  "23+15=38. 38-7=31. Answer: 31"

    python scripts/arith_tasks.py --out models/tiny-arith/eval.jsonl --n 600 --seed 1000   # the eval set

With --choices it writes a multiple-choice set instead: the prompt as `question`, four complete
worked solutions as `choices` (the target and three whose last step's result and answer are off by
a little: +-1, +-2, +-10, or its digits reversed; distinct and not negative) in a seeded random order,
and `label`, the index of the correct one. Seed 7's prompts occur neither in training (seed 0) nor
in the eval set (seed 1000):

    python scripts/arith_tasks.py --choices --out models/tiny-arith/tasks/arith-choice.jsonl --n 200 --seed 7
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


def wrong_answers(value: int) -> list[int]:
    """Near misses of `value`: distinct, not negative, never `value` itself."""
    swapped = int(str(value)[::-1]) if value >= 10 and value % 10 else value
    near = {value + 1, value - 1, value + 2, value - 2, value + 10, value - 10, swapped}
    return sorted(v for v in near if v >= 0 and v != value)


def make_choice_problem(problem: dict, rng: random.Random) -> dict:
    # The target ends "<a><op><n>=<value>. Answer: <value>": a distractor replaces both values.
    head = problem["target"].rpartition("=")[0]
    wrong = rng.sample(wrong_answers(problem["answer"]), 3)
    solutions = [problem["target"]] + [f"{head}={v}. Answer: {v}" for v in wrong]
    order = list(range(4))
    rng.shuffle(order)
    return {"question": problem["prompt"], "choices": [solutions[i] for i in order], "label": order.index(0)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--choices", action="store_true", help="write a multiple-choice set (question, choices, label)")
    args = ap.parse_args()
    problems = make_problems(args.n, args.seed)
    if args.choices:    # its own generator: the problems are the same as without --choices
        rng = random.Random(f"choices-{args.seed}")
        problems = [make_choice_problem(p, rng) for p in problems]
    with open(args.out, "w") as f:
        for p in problems:
            f.write(json.dumps(p) + "\n")


if __name__ == "__main__":
    main()
