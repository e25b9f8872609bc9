"""The bad-input corpus through the real command line: one clear line, non-zero exit, nothing damaged.

Each case of :mod:`bad_inputs` (a malformed dataset, config or checkpoint derived from a small valid
one) runs as ``python -m nerfxl.cli ...`` in a subprocess. Every case must:

- exit non-zero within ``TIMEOUT_S`` (no hang: a corrupt header must not make a loader loop or
  allocate without bound);
- print exactly one non-empty line on stderr, ``nerfxl: error: ...``, naming the offending file,
  option or key — no traceback anywhere, on stderr or stdout;
- leave the input it was given byte-for-byte as it was (size, mtime, SHA-256 of every file) and
  create nothing where a new run would have landed.

The subprocesses cost ~2-3 s of imports each, so the whole corpus runs in one module fixture, two
at a time, and the parametrized tests assert on the collected outcomes.
"""

from __future__ import annotations

import subprocess
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from bad_inputs import CASES, Case, Invocation, the_run, train_args, write_datasets
from test_parallel_cli import cli_env, snapshot

TIMEOUT_S = 120
WORKERS = 2
MIN_CASES = 50


def nerfxl(args: list[str], cwd: Path, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nerfxl.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=cli_env(), timeout=timeout)


@dataclass
class Outcome:
    case: Case
    invocation: Invocation | None = None
    result: subprocess.CompletedProcess | None = None
    seconds: float = 0.0
    timed_out: bool = False
    before: dict | None = None
    after: dict | None = None
    setup_error: str | None = None  # the case could not be built (a bug in the corpus, reported as such)


def run_case(case: Case, bases, root: Path) -> Outcome:
    outcome = Outcome(case)
    folder = root / case.name
    folder.mkdir(parents=True)
    try:
        inv = outcome.invocation = case.build(bases, folder)
        outcome.before = snapshot(inv.watch)
    except Exception:  # noqa: BLE001 - reported by the case's own test
        outcome.setup_error = traceback.format_exc()
        return outcome
    t0 = time.monotonic()
    try:
        outcome.result = nerfxl(inv.args, cwd=folder)
    except subprocess.TimeoutExpired:
        outcome.timed_out = True
    outcome.seconds = time.monotonic() - t0
    outcome.after = snapshot(inv.watch)
    return outcome


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Outcome]:
    root = tmp_path_factory.mktemp("bad_inputs")
    bases = write_datasets(root / "bases")
    runs = root / "runs"
    with ThreadPoolExecutor(WORKERS) as pool:
        trained = list(pool.map(lambda args: nerfxl(args, cwd=root, timeout=300), [
            train_args(bases.nerfstudio, runs, "run"),
            train_args(bases.nerfstudio, runs, "run-k2", "--partitions", "2"),
        ]))
    for result in trained:
        assert result.returncode == 0, result.stderr
    bases.run, bases.run_k2 = the_run(runs, "run"), the_run(runs, "run-k2")
    with ThreadPoolExecutor(WORKERS) as pool:
        outcomes = list(pool.map(lambda case: run_case(case, bases, root / "cases"), CASES.values()))
    return {o.case.name: o for o in outcomes}


def test_corpus_size():
    categories = {c.category for c in CASES.values()}
    assert len(CASES) >= MIN_CASES
    assert categories == {"dataset", "config", "checkpoint"}
    for category in categories:
        assert sum(c.category == category for c in CASES.values()) >= 10, category


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_one_line(corpus, name):
    o = corpus[name]
    assert o.setup_error is None, f"the case could not be built:\n{o.setup_error}"
    inv = o.invocation
    command = "nerfxl " + " ".join(map(str, inv.args))
    assert not o.timed_out, f"{command}: still running after {TIMEOUT_S} s"
    r = o.result
    for stream in (r.stderr, r.stdout):
        assert "Traceback" not in stream and 'File "' not in stream, f"{command}:\n{r.stderr}\n{r.stdout}"
    assert r.returncode != 0, f"{command}: exit 0\n{r.stdout}"
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"{command}: {len(lines)} lines on stderr:\n{r.stderr}"
    line = lines[0]
    assert line.startswith("nerfxl: error: "), line
    missing = [f for f in inv.expect if f not in line]
    assert not missing, f"{command}: the error does not name {missing}: {line}"
    changed = sorted(k for k in o.before.keys() | o.after.keys() if o.before.get(k) != o.after.get(k))
    assert not changed, f"{command}: changed {changed} under {inv.watch}"


def leftovers(o: Outcome) -> list[str]:
    """Files under the folder where the failed command would have put a new run."""
    out = None if o.invocation is None else o.invocation.no_output
    if out is None or not out.exists():
        return []
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def test_bad_input_leaves_no_new_run(corpus):
    """A command that would have created a run (train) and failed on bad input leaves nothing behind."""
    left = {name: leftovers(o) for name, o in corpus.items()}
    assert not {name: files for name, files in left.items() if files}


def test_usage_error_condensing_ascii_and_ansi():
    """tyro draws ASCII boxes where stdout is not UTF-8 and colours them on terminals: the line is the same."""
    from nerfxl.cli import condense_usage_error

    ascii_box = ("\x1b[31m Value error \x1b[0m\n -------------------- \n"
                 "  \x1b[1mError parsing --steps:\x1b[0m invalid literal for int() with base 10: 'abc'\n"
                 "  --------------------\n  Argument helptext:\n      --steps INT\n      Training steps.\n"
                 "  --------------------\n  For full helptext, see nerfxl train --help\n")
    assert condense_usage_error(ascii_box) == ("--steps: invalid literal for int() with base 10: 'abc' "
                                               "(see nerfxl train --help)")
    utf8_box = ("╭─ Required options ──╮\n│ Missing from nerfxl eval: │\n│     PATH │\n"
                "│         The run folder. (required) │\n│ ───── │\n│ For full helptext, run: │\n"
                "│     nerfxl eval --help │\n╰─────╯\n")
    assert condense_usage_error(utf8_box) == "missing from nerfxl eval: PATH (see nerfxl eval --help)"
    assert condense_usage_error("") .startswith("invalid command line")
