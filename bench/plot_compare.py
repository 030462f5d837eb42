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
import sys

from ratio_plot import Panel, Row, Series, mean_row, ratio_bars_svg, write_atomically

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
    if not isinstance(result, dict) or not isinstance(result.get("models"), dict) or not result["models"]:
        raise ResultError(f"{path}: no 'models' with runs in it")
    for name, entry in result["models"].items():
        for run in entry.get("runs", []):
            for key in ("batch", "threads", *(s.key for s in SERIES)):
                value = run.get(key)
                if not isinstance(value, (int, float)) or value <= 0 or not math.isfinite(value):
                    raise ResultError(f"{path}: model '{name}': run field '{key}' is {value!r}, not a positive number")
    return result


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
            means.append(mean_row(f"model suite ({len(in_suite)})", in_suite, SERIES))
        out.append(Panel(f"batch {batch}, {threads} thread{'s' if threads != 1 else ''}", rows + means))
    return out


def speedup_svg(result):
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
        write_atomically(a.output, speedup_svg(load_result(a.result)))
    except ResultError as e:
        print(f"plot_compare.py: error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {a.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
