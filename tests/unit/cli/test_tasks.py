"""Task files (cli/eval/taskfile.py, documents.py, metrics.py): parsing and its errors, the rows and
their rendering, few-shot examples, and the metrics. Real files, real jinja2 and datasets; no engine."""
import importlib.util
import json
import operator
import random
import re
import sys
import textwrap
from pathlib import Path

import pytest

from trtx.cli.errors import UserError
from trtx.cli.eval.documents import Doc, load_docs
from tests.helpers.engine import eval_rows, grade_last_answer
from trtx.cli.eval.metrics import aggregate, extracted, normalize, score_choices, score_generation
from trtx.cli.eval.models import MODELS_DIR
from trtx.cli.eval.taskfile import load_task

TASKS = MODELS_DIR / "tiny-arith" / "tasks"
SCRIPTS = Path(__file__).resolve().parents[3] / "scripts"


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def one_line_error(path: Path, line: int | None, call) -> str:
    with pytest.raises(UserError) as info:
        call()
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"{path}:{line}: " if line else f"{path}: "), text
    return text


GEN = """
    task: t
    dataset:
      path: data.jsonl
    prompt: "Q: {{ q }}\\n"
    generate:
      target: "{{ a }}"
    """


def gen_task(tmp_path, rows, text=GEN):
    jsonl(tmp_path / "data.jsonl", rows)
    return load_task(write(tmp_path / "task.yaml", text))


def doc(target=None, choices=None, gold=None) -> Doc:
    return Doc(0, "p", target, choices, gold, {})


# --- the bundled tasks ---------------------------------------------------------------------------

def test_the_arith_task_is_todays_eval():
    task = load_task(TASKS / "arith.yaml")
    assert (task.kind, task.metric_names) == ("generate", ["exact_match,last-answer"])
    assert (task.generate.max_tokens, task.generate.stop) == (96, ())
    docs, problems = load_docs(task), eval_rows(MODELS_DIR / "tiny-arith")
    assert len(docs) == len(problems) == 600
    assert [d.prompt for d in docs] == [p["prompt"] for p in problems]
    assert [d.target for d in docs] == [str(p["answer"]) for p in problems]
    assert [d.index for d in load_docs(task, max_samples=3)] == [0, 1, 2]


@pytest.mark.parametrize("text", ["Answer: 7.5", "Answer:  -3", "Answer: 3 then Answer: 7", "Answer: 7 Answer: 3",
                                  "no answer here", "Answer:", "Answer: -0", "Answer: 07", "7", "Answer:\n-3",
                                  "answer: 7", "Answer: 1,000", "Answer: \u0667"])
@pytest.mark.parametrize("answer", [7, -3, 3, 0, 1000])
def test_the_arith_task_grades_as_before_task_files(text, answer):
    task = load_task(TASKS / "arith.yaml")
    assert score_generation(task, doc(str(answer)), text) == {"exact_match,last-answer": float(grade_last_answer(text, answer))}


def test_the_choice_task_is_four_worked_solutions_one_correct(tmp_path, monkeypatch):
    task = load_task(TASKS / "arith-choice.yaml")
    assert (task.kind, task.metric_names) == ("multiple_choice", ["acc", "acc_norm", "exact_match"])
    docs = load_docs(task)
    assert len(docs) == 200
    for d in docs:
        assert d.prompt == d.row["question"] and d.prompt.endswith("?\n")
        assert d.choices == d.row["choices"] and len(set(d.choices)) == 4 and d.gold == d.row["label"]
        for i, choice in enumerate(d.choices):
            steps = re.findall(r"(\d+)([-+*])(\d+)=(\d+)\.", choice)
            a, op, b, result = steps[-1]
            right = {"+": operator.add, "-": operator.sub, "*": operator.mul}[op](int(a), int(b)) == int(result)
            assert right == (i == d.gold), choice
            assert choice.endswith(f"Answer: {result}") and int(result) >= 0
    assert sorted({d.gold for d in docs}) == [0, 1, 2, 3]
    # The file is what the documented command writes (and without --choices the script still writes
    # the eval set), and no question of it is a training prompt.
    spec = importlib.util.spec_from_file_location("arith_tasks", SCRIPTS / "arith_tasks.py")
    arith = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(arith)
    for args, made in [(["--choices", "--n", "200", "--seed", "7"], TASKS / "arith-choice.jsonl"),
                       (["--n", "600", "--seed", "1000"], MODELS_DIR / "tiny-arith" / "eval.jsonl")]:
        out = tmp_path / "out.jsonl"
        monkeypatch.setattr(sys, "argv", ["arith_tasks.py", "--out", str(out), *args])
        arith.main()
        assert out.read_bytes() == made.read_bytes()
    training = {p["prompt"] for p in arith.make_problems(1100 * 48 // 2 + 2000, 0)}   # train_tiny_model.py's
    assert not training & {d.prompt for d in docs}


# --- few-shot --------------------------------------------------------------------------------------

FEWSHOT = GEN + """
    fewshot:
      k: 2
      seed: SEED
      separator: "---"
    """


def test_fewshot_is_one_seeded_draw_that_never_includes_the_doc(tmp_path):
    rows = [{"q": f"q{i}", "a": i} for i in range(6)]
    task = gen_task(tmp_path, rows, FEWSHOT.replace("SEED", "5"))
    docs = load_docs(task)
    pool = random.Random(5).sample(range(6), 3)       # k + 1: a doc drawn as an example gets the next one
    example = {i: f"Q: q{i}\n{i}" for i in range(6)}
    for d in docs:
        shots = [j for j in pool if j != d.index][:2]
        assert d.prompt == f"{example[shots[0]]}---{example[shots[1]]}---Q: q{d.index}\n"
    for i in pool[:2]:                                # drawn itself: its own example is left out
        assert f"Q: q{i}\n{i}---" not in docs[i].prompt and docs[i].prompt.count("---") == 2
    assert [d.prompt for d in load_docs(task)] == [d.prompt for d in docs]
    other = [d.prompt for d in load_docs(gen_task(tmp_path, rows, FEWSHOT.replace("SEED", "6")))]
    assert other != [d.prompt for d in docs]


def test_fewshot_from_another_split_with_its_own_target(tmp_path):
    jsonl(tmp_path / "train.jsonl", [{"q": "t0", "a": 0, "w": "zero"}, {"q": "t1", "a": 1, "w": "one"}])
    jsonl(tmp_path / "test.jsonl", [{"q": "x", "a": 9}])
    task = load_task(write(tmp_path / "task.yaml", """
        task: t
        dataset:
          files: {train: train.jsonl, test: test.jsonl}
          split: test
        prompt: "{{ q }}="
        fewshot: {k: 2, split: train, seed: 0}
        generate:
          target: "{{ a }}"
          fewshot_target: "{{ w }}"
        """))
    order = random.Random(0).sample(range(2), 2)
    shots = [f"t{i}={['zero', 'one'][i]}" for i in order]
    assert [d.prompt for d in load_docs(task)] == ["\n\n".join(shots + ["x="])]
    # the eval split's own file replaced: the few-shot split keeps the task's
    jsonl(tmp_path / "other.jsonl", [{"q": "y", "a": 1}, {"q": "z", "a": 2}])
    assert [d.prompt[-2:] for d in load_docs(task, data_path=tmp_path / "other.jsonl")] == ["y=", "z="]


# --- filters and normalisation ---------------------------------------------------------------------

FILTERS = GEN.replace('target: "{{ a }}"', '''target: "{{ a }}"
      filters:
        - name: strict
          regex: "#### (-?[0-9.,]+)"
        - {name: flexible, regex: "-?\\\\d+", take: last}
        - {name: first-no-group, regex: "\\\\d+", fallback: none}
        - {name: whole}''')


def test_filters_extract_first_last_group_and_fallback(tmp_path):
    task = gen_task(tmp_path, [{"q": "x", "a": 3}], FILTERS)
    assert task.metric_names == ["exact_match,strict", "exact_match,flexible", "exact_match,first-no-group",
                                 "exact_match,whole"]
    assert extracted(task, "2 and #### 3 then 4") == {"strict": "3", "flexible": "4", "first-no-group": "2",
                                                        "whole": "2 and #### 3 then 4"}
    assert extracted(task, "nothing") == {"strict": "[invalid]", "flexible": "[invalid]", "first-no-group": "none",
                                          "whole": "nothing"}
    d = load_docs(task)[0]
    assert score_generation(task, d, "#### 3 and 2 then 3") == {
        "exact_match,strict": 1.0, "exact_match,flexible": 1.0, "exact_match,first-no-group": 1.0,
        "exact_match,whole": 0.0}
    assert score_generation(task, d, "3") == {"exact_match,strict": 0.0, "exact_match,flexible": 1.0,
                                              "exact_match,first-no-group": 1.0, "exact_match,whole": 1.0}


def test_the_default_filter_takes_the_last_number(tmp_path):
    task = gen_task(tmp_path, [{"q": "x", "a": 3}])
    assert (task.metric_names, task.generate.normalize, task.generate.max_tokens) == (
        ["exact_match,flexible-extract"], "none", 256)
    assert extracted(task, "1, 2 and -3.5 then $1,234.") == {"flexible-extract": "$1,234"}
    assert extracted(task, "so 12, 13.") == {"flexible-extract": "13"}
    assert score_generation(task, load_docs(task)[0], "2+1 is 3.") == {"exact_match,flexible-extract": 1.0}


@pytest.mark.parametrize("a,b,equal", [("1,000", "1000", True), ("7.0", "7", True), ("$7", "7", True),
                                       ("7.", "7", True), (" - 3 ", "-3", True), ("-0", "0", True),
                                       ("0.50", ".5", True), ("7.5", "7", False), ("+5", "5", True),
                                       ("seven.", "seven", True), ("seven", "Seven", False), ("7a", "7", False)])
def test_numeric_normalisation(a, b, equal):
    assert (normalize(a, "numeric") == normalize(b, "numeric")) == equal


def test_text_normalisation_and_none():
    assert normalize("  Hello\t  World \n", "text") == "hello world" == normalize("HELLO WORLD", "text")
    assert normalize(" Straße ", "text") == normalize("STRASSE", "text")
    assert normalize(" 7 ", "none") == " 7 " != normalize("7", "none")


# --- multiple choice ---------------------------------------------------------------------------------

def test_acc_and_acc_norm_differ_where_length_matters():
    d = doc(choices=[" a", " a much longer one"], gold=1)      # 2 and 18 UTF-8 bytes
    # choice 0 is more likely in total (-4 > -9), choice 1 per byte (-0.5 > -2)
    assert score_choices(d, [-4.0, -9.0], [False, True]) == {"acc": 0.0, "acc_norm": 1.0, "exact_match": 1.0}
    assert score_choices(d, [-9.0, -4.0], [True, False]) == {"acc": 1.0, "acc_norm": 1.0, "exact_match": 0.0}
    assert score_choices(doc(choices=["x", "y"], gold=1), [-1.0, -1.0], [False, False])["acc"] == 0.0   # tie: first
    # per byte (3 each) choice 0 wins; per character (2 and 3) choice 1 would
    assert score_choices(doc(choices=[" é", " ab"], gold=0), [-2.0, -2.1], [False, False])["acc_norm"] == 1.0
    with pytest.raises(ValueError):
        score_choices(d, [-1.0], [True])


def test_aggregate_is_the_mean_on_the_0_100_scale():
    assert aggregate([{"acc": 1.0, "acc_norm": 0.0}, {"acc": 0.0, "acc_norm": 0.0},
                      {"acc": 1.0, "acc_norm": 1.0}, {"acc": 1.0, "acc_norm": 0.0}]) == {"acc": 75.0, "acc_norm": 25.0}


def test_choices_as_templates_and_a_target_template(tmp_path):
    jsonl(tmp_path / "data.jsonl", [{"q": "2+2", "A": "3", "B": "4", "answer": "B"}])
    task = load_task(write(tmp_path / "task.yaml", """
        task: t
        dataset: {path: data.jsonl}
        prompt: "{{ q }} ="
        fewshot: {k: 0}
        multiple_choice:
          choices: ["{{ A }}", "{{ B }}"]
          target: "{{ 'AB'.index(answer) }}"
        """))
    [d] = load_docs(task)
    assert (d.prompt, d.choices, d.gold) == ("2+2 =", [" 3", " 4"], 1)


# --- datasets in other formats -----------------------------------------------------------------------

def test_parquet_and_json_array_datasets(tmp_path, capfd):
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"q": ["a", "b"], "a": [1, 2]}), tmp_path / "data.parquet")
    text = GEN.replace("data.jsonl", "data.parquet").replace("path: data", "fields: {a: integer}\n      path: data")
    task = load_task(write(tmp_path / "task.yaml", text))
    assert [(d.prompt, d.target, d.row) for d in load_docs(task)] == [("Q: a\n", "1", {"q": "a", "a": 1}),
                                                                      ("Q: b\n", "2", {"q": "b", "a": 2})]
    pq.write_table(pa.table({"q": ["a", "b"], "a": [1.5, 2.0]}), tmp_path / "floats.parquet")
    task = load_task(write(tmp_path / "task.yaml", text.replace("data.parquet", "floats.parquet")))
    assert "row 1: 'a' must be an integer, got 1.5" in one_line_error(tmp_path / "floats.parquet", None,
                                                                        lambda: load_docs(task))
    (tmp_path / "floats.parquet").write_text("not parquet")
    assert "cannot read the dataset: Parquet magic bytes not found" in one_line_error(
        tmp_path / "floats.parquet", None, lambda: load_docs(task))
    assert capfd.readouterr().err == ""                 # nothing but the one line
    (tmp_path / "data.json").write_text(json.dumps([{"q": "c", "a": 3}, {"q": "d", "a": 4}]))
    task = load_task(write(tmp_path / "task.yaml", GEN.replace("data.jsonl", "data.json")))
    assert [d.prompt for d in load_docs(task)] == ["Q: c\n", "Q: d\n"]


def test_json_values_are_the_files_own(tmp_path):
    """datasets' JSON reader would make the date a datetime, 3 beside 2.5 a 3.0 and "0" beside 0 a 0."""
    rows = [{"q": "2020-01-01", "a": 3, "l": 0}, {"q": "x", "a": 2.5, "l": "0"}]
    task = gen_task(tmp_path, rows, GEN.replace('"{{ a }}"', '"{{ a }}/{{ l }}"'))
    assert [(d.prompt, d.target, d.row) for d in load_docs(task)] == [
        ("Q: 2020-01-01\n", "3/0", rows[0]), ("Q: x\n", "2.5/0", rows[1])]
    task = gen_task(tmp_path, rows, MC.replace("choices: c", "choices: ['{{ q }}', b]"))
    assert "the field 'l' must be an integer index, got '0'" in one_line_error(tmp_path / "data.jsonl", 2,
                                                                               lambda: load_docs(task))


# --- errors: one line, naming the file and line -------------------------------------------------------

TASK_ERRORS = [
    ("task: t\ndataset: [\n", 3, "invalid YAML"),
    ("task: t\ndataset:\n  path: data.jsonl\n  spilt: test\nprompt: x\ngenerate: {target: y}\n", 4,
     "unknown key 'spilt' in dataset (did you mean: split?); allowed: path, files, split, fields"),
    ("task: t\ndataset: {path: data.jsonl}\nprompt: x\ngenerate:\n  target: y\n  filters:\n    - {name: a, regx: b}\n",
     7, "unknown key 'regx' in generate.filters[0] (did you mean: regex?)"),
    ("task: t\ndataset: {path: data.jsonl}\nprompt: x\ngenerate:\n  target: y\n  max_tokens: many\n", 6,
     "generate.max_tokens must be an integer, got 'many'"),
    ("task: t\ndataset: {path: data.jsonl}\nprompt: x\ngenerate:\n  target: y\n  max_tokens: true\n", 6,
     "generate.max_tokens must be an integer, got True"),
    ("task: t\ndataset: {path: data.jsonl}\nprompt: {{ q }}\ngenerate: {target: y}\n", 3,
     "prompt must be a string, got a mapping (a template starting with '{{' must be quoted in YAML)"),
    ("task: t\ndataset: {path: data.jsonl}\ngenerate: {target: y}\n", 1, "the task file has no 'prompt' (required)"),
    ("task: t\ndataset: {path: data.jsonl}\nprompt: x\ngenerate: {}\n", 4, "generate has no 'target'"),
    ("task: t\ndataset: {path: data.jsonl}\nprompt: x\ngenerate: {target: y}\n"
     "multiple_choice: {choices: c, target: l}\n", 5,
     "exactly one of 'generate' and 'multiple_choice', this one has both"),
    ("task: t\ndataset: {path: data.jsonl}\nprompt: x\n", 1, "this one has neither"),
    ("task: t\ndataset:\n  split: train\nprompt: x\ngenerate: {target: y}\n", 3, "dataset needs exactly one of 'path'"),
    ("task: t\ndataset: {path: a.jsonl, files: {train: b.jsonl}}\nprompt: x\ngenerate: {target: y}\n", 2,
     "dataset needs exactly one of 'path'"),
    ("task: t\ndataset: {path: data.csv}\nprompt: x\ngenerate: {target: y}\n", 2, "must be a .jsonl, .json, .parquet"),
    ("task: t\ndataset:\n  path: data.jsonl\n  split: test\nprompt: x\ngenerate: {target: y}\n", 4,
     "no split 'test' in the dataset (splits: train)"),
    ("task: t\ndataset: {files: {test: a.jsonl}}\nprompt: x\ngenerate: {target: y}\n", 2, "no split 'train'"),
    ("task: t\ndataset: {path: data.jsonl}\nprompt: x\nfewshot: {k: 1, split: dev}\ngenerate: {target: y}\n", 4,
     "no split 'dev'"),
    ("task: t\ndataset: {path: data.jsonl, fields: {a: int}}\nprompt: x\ngenerate: {target: y}\n", 2,
     "dataset.fields.a must be one of string, integer, number, boolean, list, got 'int' (did you mean: integer?)"),
    ("task: t\ndataset: {path: data.jsonl}\nprompt: \"{{ q }\"\ngenerate: {target: y}\n", 3,
     "prompt: template syntax error: unexpected '}'"),
    ("task: t\ndataset: {path: data.jsonl}\nprompt: |\n  line one\n  {% if x %}\ngenerate: {target: y}\n", 5,
     "prompt: template syntax error: Unexpected end of template"),
    ("task: t\ndataset: {path: data.jsonl}\nprompt: x\ngenerate:\n  target: y\n  filters: [{name: a, regex: '(b'}]\n",
     6, "generate.filters[0].regex is not a valid regular expression"),
    ("task: t\ndataset: {path: data.jsonl}\nprompt: x\ngenerate:\n  target: y\n  filters:\n    - name: a\n"
     "      regex: '(b)'\n      group: 2\n", 9, "generate.filters[0].group is 2, but the regex has 1 group(s)"),
    ("task: t\ndataset: {path: data.jsonl}\nprompt: x\ngenerate:\n  target: y\n  filters: [{name: a}, {name: a}]\n",
     6, "two filters are named 'a'"),
    ("task: t\ndataset: {path: data.jsonl}\nprompt: x\ngenerate:\n  target: y\n  normalize: number\n", 6,
     "generate.normalize must be one of none, text, numeric, got 'number' (did you mean: numeric?)"),
    ("task: t\ndataset: {path: data.jsonl}\nprompt: x\nmultiple_choice:\n  choices: '{{ c }}'\n  target: l\n", 5,
     "multiple_choice.choices must be the name of a field"),
    ("task: t\ndataset: {path: data.jsonl}\nprompt: x\nfewshot:\n  k: -1\ngenerate: {target: y}\n", 5,
     "fewshot.k must be at least 0, got -1"),
    ("task: a/b\ndataset: {path: data.jsonl}\nprompt: x\ngenerate: {target: y}\n", 1, "task must be a name"),
    ("task: t\ntask: u\ndataset: {path: data.jsonl}\nprompt: x\ngenerate: {target: y}\n", 2, "duplicate key 'task'"),
    ("- task\n", 1, "the task file must be a mapping, got a list"),
    ("task: !!python/name:os.system t\ndataset: {path: data.jsonl}\nprompt: x\ngenerate: {target: y}\n", 1,
     "invalid YAML: could not determine a constructor"),
    ("task: t\ndataset: {files: {1: a.jsonl}}\nprompt: x\ngenerate: {target: y}\n", 2,
     "the keys of dataset.files must be strings, got 1"),
    ("task: t\ndataset: {path: data.jsonl}\nprompt: x\ngenerate:\n  target: y\n  stop: [a, '']\n", 6,
     "a stop string cannot be empty"),
    ("task: t\ndataset: {path: data.jsonl}\nprompt: x\ngenerate:\n  target: y\n  filters:\n    - name: a\n"
     "      take: last\n", 8, "generate.filters[0].take needs a regex"),
]


@pytest.mark.parametrize("text,line,message", TASK_ERRORS)
def test_task_file_errors_name_the_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "task.yaml"
    path.write_text(text)
    assert message in one_line_error(path, line, lambda: load_task(path))


def test_unreadable_task_files(tmp_path):
    missing, empty, latin = tmp_path / "no.yaml", tmp_path / "empty.yaml", tmp_path / "latin.yaml"
    assert "cannot read the task file" in one_line_error(missing, None, lambda: load_task(missing))
    empty.write_text("# nothing\n")
    assert "is empty" in one_line_error(empty, None, lambda: load_task(empty))
    latin.write_bytes(b"task: t\ndescription: caf\xe9\n")
    assert "not UTF-8" in one_line_error(latin, 2, lambda: load_task(latin))


MC = """
    task: t
    dataset: {path: data.jsonl}
    prompt: "{{ q }}"
    multiple_choice: {choices: c, target: l}
    """
GOOD = {"q": "x", "a": 1, "b": [1], "c": ["y", "z"], "l": 0, "t": "1"}

DATA_ERRORS = [     # (task text, the bad row (line 3, after a good row and a blank line), message)
    (GEN, {"q": "x"}, "cannot render generate.target: 'a' is undefined (the row's fields: q)"),
    (GEN.replace("Q: {{ q }}", "{{ q.upper() }} {{ b[0] }}"), {"q": "x", "a": 1},
     "cannot render prompt: 'b' is undefined"),
    (GEN.replace("path: data.jsonl", "path: data.jsonl\n      fields: {a: integer, q: string}"),
     dict(GOOD, a="four"), "'a' must be an integer, got 'four'"),
    (GEN.replace("path: data.jsonl", "path: data.jsonl\n      fields: {a: integer}"), dict(GOOD, a=True),
     "'a' must be an integer, got True"),
    (GEN.replace("path: data.jsonl", "path: data.jsonl\n      fields: {b: list}"), {"q": "x", "a": 1},
     "no 'b' field (found: q, a); the task's dataset.fields needs b"),
    (GEN, '{"q": "x", ', "invalid JSON"),
    (GEN, "[1, 2]", "expected a JSON object"),
    (MC, dict(GOOD, c="y z"), "multiple_choice.choices: the field 'c' must be a non-empty list of strings, got 'y z'"),
    (MC, dict(GOOD, c=["y", 2]), "the field 'c' must be a non-empty list of strings"),
    (MC, dict(GOOD, l=2), "multiple_choice.target is 2, outside the 2 choices (0-1)"),
    (MC, dict(GOOD, l="0"), "multiple_choice.target: the field 'l' must be an integer index, got '0'"),
    (MC.replace("target: l", "target: '{{ t }}'"), dict(GOOD, t="one"),
     "multiple_choice.target must render an integer index, got 'one'"),
    (MC.replace("{choices: c", "{continuation: '{{ choice }}', choices: c"), dict(GOOD, c=["y", ""]),
     "choice 1 renders to an empty continuation"),
    (GEN.replace('"Q: {{ q }}\\n"', '"{{ q }}"'), dict(GOOD, q=""),
     "the prompt renders empty: the model needs text to continue"),
    (GEN, '{"q": "x", "a": 1, "a": 2}', "the key 'a' appears twice in one object"),
]


@pytest.mark.parametrize("text,bad,message", DATA_ERRORS)
def test_data_errors_name_the_data_file_and_line(tmp_path, text, bad, message):
    task = gen_task(tmp_path, [GOOD, "", bad, GOOD], text)
    assert message in one_line_error(tmp_path / "data.jsonl", 3, lambda: load_docs(task))


def test_an_empty_parquet_split_is_the_empty_split_error(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({"q": pa.array([], pa.string()), "a": pa.array([], pa.int64())}), tmp_path / "d.parquet")
    task = load_task(write(tmp_path / "task.yaml", GEN.replace("data.jsonl", "d.parquet")))
    assert "the split 'train'" in one_line_error(tmp_path / "task.yaml", 3, lambda: load_docs(task))


def test_dataset_errors(tmp_path):
    task = load_task(write(tmp_path / "task.yaml", GEN))          # data.jsonl is on line 3
    path = tmp_path / "task.yaml"
    assert f"no dataset file {tmp_path / 'data.jsonl'}" in one_line_error(path, 3, lambda: load_docs(task))
    jsonl(tmp_path / "data.jsonl", ["", "  "])
    assert "the split 'train'" in one_line_error(path, 3, lambda: load_docs(task))
    assert "has no rows" in one_line_error(path, 3, lambda: load_docs(task))
    (tmp_path / "data.jsonl").write_bytes(b'{"q": "x", "a": 1}\n{"q": "\xff"}\n')
    assert "not UTF-8" in one_line_error(tmp_path / "data.jsonl", 2, lambda: load_docs(task))
    missing = tmp_path / "elsewhere.jsonl"
    assert "no dataset file" in one_line_error(missing, None, lambda: load_docs(task, data_path=missing))


def test_fewshot_k_beyond_the_split(tmp_path):
    path = tmp_path / "task.yaml"
    task = gen_task(tmp_path, [{"q": f"q{i}", "a": i} for i in range(2)], FEWSHOT.replace("SEED", "0"))
    # k 2 from the eval split itself needs 3 rows: a doc is never its own example
    line = path.read_text().splitlines().index("  k: 2") + 1
    message = one_line_error(path, line, lambda: load_docs(task))
    assert "fewshot.k is 2, but the split 'train'" in message
    assert "has 2 rows (a doc is never its own example)" in message
    jsonl(tmp_path / "data.jsonl", [{"q": f"q{i}", "a": i} for i in range(3)])
    assert len(load_docs(task)) == 3
