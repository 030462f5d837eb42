#!/usr/bin/env python3
"""The speed-ups of a bench/compare_ort.py run as one SVG: a panel per batch size and thread count,
a row per model (and one for the geometric mean), two bars per row: Sparrow's .spw and Sparrow's
dense executor, each as its speed-up over ONNX Runtime on the original model. The x axis is
logarithmic and the bars start at 1x, so a bar to the right is that much faster than ONNX Runtime
and one to the left that much slower. Usage:
  bench/plot_compare.py RESULT -o OUT.svg
RESULT is the JSON that compare_ort.py writes with --json, or its printed output (the last line
that is a JSON object).
"""
import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ratio_plot import Panel, Row, Series, mean_row, ratio_bars_svg, write_atomically  # noqa: E402

SERIES = (Series("spw_ratio", ".spw on the sparse engine", "#1f5fa8"),
          Series("dense_ratio", "dense executor", "#9bbce0"))
ROUNDS = {"spw_ratio": "spw_ratio_rounds", "dense_ratio": "dense_ratio_rounds"}  # each ratio's rounds


class ResultError(Exception):
    pass


def load_result(path):
    """The result object of a compare_ort.py run: a JSON file, or its printed output (last JSON line)."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise ResultError(f"{path}: {e.strerror}")
    try:
        result = json.loads(text)
    except json.JSONDecodeError:
        lines = [line for line in text.splitlines() if line.startswith("{")]
        if not lines:
            raise ResultError(f"{path}: no JSON object (neither a --json file nor compare_ort.py's output)")
        try:
            result = json.loads(lines[-1])
        except json.JSONDecodeError as e:
            raise ResultError(f"{path}: the last JSON line does not parse: {e}")
    check_result(path, result)
    return result


def is_positive(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 and math.isfinite(value)


def check_result(path, result):
    """Raises ResultError, naming the file, model, run and field, unless `result` has at least one
    run and every run has whole positive batch and threads, positive finite ratios and, where it
    has rounds, a list of positive finite ratios."""
    if not isinstance(result, dict) or not isinstance(result.get("models"), dict):
        raise ResultError(f"{path}: no 'models' object")
    runs = 0
    for name, entry in result["models"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("runs", []), list):
            raise ResultError(f"{path}: model '{name}': not an object with a list of 'runs'")
        for i, run in enumerate(entry.get("runs", [])):
            where = f"{path}: model '{name}', run {i + 1}"
            if not isinstance(run, dict):
                raise ResultError(f"{where}: not an object")
            for key in ("batch", "threads"):
                if not isinstance(run.get(key), int) or isinstance(run.get(key), bool) or run[key] < 1:
                    raise ResultError(f"{where}: field '{key}' is {run.get(key)!r}, not a whole number >= 1")
            for s in SERIES:
                if not is_positive(run.get(s.key)):
                    raise ResultError(f"{where}: field '{s.key}' is {run.get(s.key)!r}, not a positive number")
                rounds = run.get(ROUNDS[s.key])
                if rounds is not None and (not isinstance(rounds, list) or not all(map(is_positive, rounds))):
                    raise ResultError(f"{where}: field '{ROUNDS[s.key]}' is {rounds!r}, not a list of positive numbers")
            runs += 1
    if runs == 0:
        raise ResultError(f"{path}: no model has runs")


def panels(result):
    """A Panel per batch and thread count, in that order, a Row per model. Each panel ends with the
    geometric mean over its models and, where the result names a suite (compare_ort.py's generated
    models) among other models, over the suite's."""
    cases = {}
    for name, entry in result["models"].items():
        for run in entry.get("runs", []):
            ratios = {s.key: run[s.key] for s in SERIES}
            spreads = {s.key: (min(run[ROUNDS[s.key]]), max(run[ROUNDS[s.key]])) for s in SERIES
                       if run.get(ROUNDS[s.key])}
            cases.setdefault((run["batch"], run["threads"]), []).append(Row(name, ratios, spreads, False))
    suite = set(result.get("suite", []))
    out = []
    for (batch, threads), rows in sorted(cases.items()):
        means = [mean_row(f"geometric mean ({len(rows)})", rows, SERIES)]
        in_suite = [row for row in rows if row.label in suite]
        if in_suite and len(in_suite) < len(rows):
            means.append(mean_row(f"suite geomean ({len(in_suite)})", in_suite, SERIES))
        out.append(Panel(f"batch {batch}, {threads} thread{'s' if threads != 1 else ''}", rows + means))
    return out


def speedup_svg(result):
    """The figure of a checked result (load_result)."""
    subtitle = (f"CPU: {result.get('cpu', 'not recorded')}; .spw made with: "
                f"{result.get('compress', 'not recorded')}; bars: the median of the rounds' speed-ups")
    return ratio_bars_svg("Sparrow against ONNX Runtime on the original models (right of 1x: faster)", subtitle,
                          SERIES, panels(result), "speed-up over ONNX Runtime (log scale)",
                          range_legend="range over the rounds")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("result", help="compare_ort.py's --json file or its printed output")
    ap.add_argument("-o", "--output", required=True, help="SVG to write")
    a = ap.parse_args()
    try:
        svg = speedup_svg(load_result(a.result))
    except ResultError as e:
        print(f"plot_compare.py: error: {e}", file=sys.stderr)
        return 1
    try:
        write_atomically(a.output, svg)
    except OSError as e:
        print(f"plot_compare.py: error: {a.output}: {e.strerror}", file=sys.stderr)
        return 1
    print(f"wrote {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
