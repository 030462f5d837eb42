#!/usr/bin/env python3
"""The bench plots (bench/ratio_plot.py): compare_ort.py's results drawn by bench/plot_compare.py,
whose bars stand where their ratios say, whose geometric means are the models' and which refuses bad
results naming the file and field; and `sparrow bench --eie` runs drawn by bench/summarize_eie.py.

Usage: plots_test.py (unittest; needs only the standard library)
"""
import json
import math
import os
import subprocess
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET

BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench")
sys.path.insert(0, BENCH)
import plot_compare  # noqa: E402
import ratio_plot  # noqa: E402
import summarize_eie  # noqa: E402

SVG = "{http://www.w3.org/2000/svg}"


def run(model, batch, threads, spw, dense, rounds=None):
    r = {"model": model, "batch": batch, "threads": threads, "spw_ratio": spw, "dense_ratio": dense}
    if rounds:
        r["spw_ratio_rounds"], r["dense_ratio_rounds"] = rounds
    return r


def result(suite=None):
    models = {
        "a": {"runs": [run("a", 1, 1, 2.0, 0.5, ([1.5, 2.0, 3.0], [0.4, 0.5, 0.6])), run("a", 16, 2, 1.0, 1.0)]},
        "b": {"runs": [run("b", 1, 1, 8.0, 1.0), run("b", 16, 2, 0.25, 4.0)]},
        "c": {"runs": [run("c", 1, 1, 4.0, 2.0), run("c", 16, 2, 3.0, 0.75)]},
    }
    r = {"cpu": "Test CPU", "compress": "--sparsity 0.9 --bits 4", "models": models}
    if suite is not None:
        r["suite"] = suite
    return r


def bars(svg_text):
    """(label text of the row, series index, x, width, data-ratio) of every bar, top to bottom."""
    root = ET.fromstring(svg_text)
    rects = [e for e in root.iter(SVG + "rect") if e.get("data-ratio")]
    out = []
    for rect in rects:
        title = rect.find(SVG + "title").text
        label, _, rest = title.partition(", ")
        series = 0 if rest.startswith(".spw") else 1
        out.append((label, series, float(rect.get("x")), float(rect.get("width")), float(rect.get("data-ratio"))))
    return out


class Bars(unittest.TestCase):
    def test_bars_start_at_one_and_are_as_long_as_their_log_ratio(self):
        found = bars(plot_compare.speedup_svg(result()))
        self.assertEqual(len(found), 2 * 2 * 4)  # 3 models + their geometric mean, two series, two panels
        unit = found[0][3] / abs(math.log2(found[0][4]))  # pixels per doubling, from model a's 2x
        for label, series, x, width, ratio in found:
            # widths are written to 0.1 px
            self.assertAlmostEqual(width, unit * abs(math.log2(ratio)), delta=0.11, msg=(label, series))
        # Every bar of a panel has one end on the panel's 1x line: the right end below 1x.
        for panel in (found[:8], found[8:]):
            ends = [x if ratio >= 1 else x + w for _, _, x, w, ratio in panel]
            self.assertLess(max(ends) - min(ends), 0.15, ends)
        self.assertNotEqual(found[0][2], found[8][2])  # the panels stand side by side

    def test_the_geometric_mean_row_is_the_models_geometric_mean(self):
        found = bars(plot_compare.speedup_svg(result()))
        means = [(s, r) for label, s, _, _, r in found if label.startswith("geometric mean (3)")]
        # batch 1: .spw 2, 8, 4 -> 4; dense 0.5, 1, 2 -> 1; batch 16: .spw 1, 0.25, 3; dense 1, 4, 0.75
        expected = [4.0, 1.0, (1.0 * 0.25 * 3.0) ** (1 / 3), (1.0 * 4.0 * 0.75) ** (1 / 3)]
        self.assertEqual(len(means), 4)
        for (_, got), want in zip(means, expected):
            self.assertAlmostEqual(got, want, places=3)

    def test_a_suite_among_other_models_gets_its_own_mean(self):
        found = bars(plot_compare.speedup_svg(result(suite=["a", "b"])))
        suite = [ratio for label, series, _, _, ratio in found if label == "suite geomean (2)" and series == 0]
        self.assertAlmostEqual(suite[0], 4.0, places=3)  # batch 1: .spw 2 and 8
        self.assertAlmostEqual(suite[1], 0.5, places=3)  # batch 16: .spw 1 and 0.25
        labels = {label for label, *_ in bars(plot_compare.speedup_svg(result(suite=["a", "b", "c"])))}
        self.assertNotIn("suite geomean (3)", labels)  # the suite is every model: one mean says it

    def test_names_are_escaped_and_a_lone_panel_is_drawn(self):
        r = result()
        r["cpu"] = "A & B <x>"
        r["models"] = {"m<1>&": {"runs": [run("m<1>&", 1, 1, 2.0, 0.5)]}}
        root = ET.fromstring(plot_compare.speedup_svg(r))  # parses: the names were escaped
        texts = [e.text for e in root.iter(SVG + "text")]
        self.assertIn("m<1>&", texts)
        self.assertTrue(any("A & B <x>" in t for t in texts))
        self.assertEqual(len(bars(ET.tostring(root, encoding="unicode"))), 2 * 2)

    def test_ticks_thin_out_on_a_wide_range_and_read_as_fractions_below_1x(self):
        self.assertEqual(ratio_plot.tick_exponents(-1, 5, 270), [-1, 0, 1, 2, 3, 4, 5])
        ticks = ratio_plot.tick_exponents(-12, 20, 270)
        self.assertIn(0, ticks)
        self.assertLessEqual(len(ticks), 270 // ratio_plot.MIN_TICK_GAP + 1)
        self.assertEqual([ratio_plot.tick_label(e) for e in (-3, 0, 5)], ["1/8x", "1x", "32x"])

    def test_a_ratio_printed_as_1_00x_stands_right_of_the_line(self):
        svg = plot_compare.speedup_svg({"models": {"a": {"runs": [run("a", 1, 1, 0.999, 0.5)]}}})
        root = ET.fromstring(svg)
        label = next(e for e in root.iter(SVG + "text") if e.text == "1.00x")
        self.assertEqual(label.get("text-anchor"), "start")

    def test_the_rounds_range_is_drawn_and_the_axis_covers_it(self):
        root = ET.fromstring(plot_compare.speedup_svg(result()))
        ranges = [e for e in root.iter(SVG + "line") if e.get("class") == "range"]
        self.assertEqual(len(ranges), 2)  # only model a at batch 1 kept its rounds
        self.assertEqual(ratio_plot.axis_range(plot_compare.panels(result())), (-2, 3))


class BadResults(unittest.TestCase):
    def write(self, text):
        f = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
        f.write(text)
        f.close()
        self.addCleanup(os.unlink, f.name)
        return f.name

    def test_printed_output_is_read_from_its_last_json_line(self):
        path = self.write("CPU: x\nmodel batch ...\n" + json.dumps(result()) + "\n")
        self.assertEqual(plot_compare.load_result(path)["cpu"], "Test CPU")

    def test_refusals_name_the_file_and_the_field(self):
        bad = result()
        bad["models"]["b"]["runs"][1]["spw_ratio"] = -1
        bad_rounds = result()
        bad_rounds["models"]["a"]["runs"][0]["dense_ratio_rounds"] = [0.4, 0]
        bad_batch = result()
        bad_batch["models"]["c"]["runs"][0]["batch"] = True
        cases = {"no json here\n": "no JSON object", json.dumps({"models": 3}): "no 'models' object",
                 json.dumps({"models": {}}): "no model has runs",
                 json.dumps({"models": {"a": {"runs": []}}}): "no model has runs",
                 json.dumps({"models": {"a": 3}}): "model 'a': not an object",
                 json.dumps(bad): "model 'b', run 2: field 'spw_ratio' is -1",
                 json.dumps(bad_rounds): "model 'a', run 1: field 'dense_ratio_rounds' is [0.4, 0]",
                 json.dumps(bad_batch): "model 'c', run 1: field 'batch' is True"}
        for text, message in cases.items():
            path = self.write(text)
            with self.assertRaises(plot_compare.ResultError) as e:
                plot_compare.load_result(path)
            self.assertIn(path, str(e.exception))
            self.assertIn(message, str(e.exception))

    def test_the_command_exits_1_and_writes_nothing_on_a_bad_result(self):
        path = self.write("{\"models\": 3}")
        out = path + ".svg"
        p = subprocess.run([sys.executable, os.path.join(BENCH, "plot_compare.py"), path, "-o", out],
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 1)
        self.assertIn("plot_compare.py: error: " + path, p.stderr)
        self.assertFalse(os.path.exists(out))

    def test_a_failed_write_is_an_error_naming_the_output_and_leaves_no_temporary_file(self):
        path = self.write(json.dumps(result()))
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "missing", "plot.svg")
            p = subprocess.run([sys.executable, os.path.join(BENCH, "plot_compare.py"), path, "-o", out],
                               capture_output=True, text=True)
            self.assertEqual(p.returncode, 1)
            self.assertIn(f"plot_compare.py: error: {out}: ", p.stderr)
            occupied = os.path.join(d, "dir.svg")
            os.mkdir(occupied)  # renaming a file over a directory fails after the write
            with self.assertRaises(OSError):
                ratio_plot.write_atomically(occupied, "x")
            self.assertEqual(os.listdir(d), ["dir.svg"])

    def test_compare_ort_imports_and_offers_json_and_plot(self):
        p = subprocess.run([sys.executable, os.path.join(BENCH, "compare_ort.py"), "--help"], capture_output=True,
                           text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("--json", p.stdout)
        self.assertIn("--plot", p.stdout)

    def test_the_command_writes_the_svg(self):
        path = self.write(json.dumps(result()))
        out = path + ".svg"
        self.addCleanup(lambda: os.path.exists(out) and os.unlink(out))
        p = subprocess.run([sys.executable, os.path.join(BENCH, "plot_compare.py"), path, "-o", out],
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        ET.parse(out)


def eie_layer(name, batch, threads, sparrow_us, plain_us, dense_us):
    return {"name": name, "batch": batch, "threads": threads, "sparrow_us": sparrow_us, "plain_us": plain_us,
            "dense_us": dense_us, "eigen_us": 2 * dense_us}


def eie_geomean(plain, dense):
    return {"speedup_vs_plain": plain, "speedup_vs_dense": dense, "speedup_vs_eigen": 2 * dense}


class EiePlot(unittest.TestCase):
    RUN = {"machine": "Test CPU", "weights": "unstructured", "isa": "avx512", "repeats": 21,
           "layers": [eie_layer("L1", 1, 1, 100, 200, 800), eie_layer("L2", 1, 1, 50, 400, 100),
                      eie_layer("L1", 64, 1, 1000, 900, 4000), eie_layer("L2", 64, 1, 500, 500, 1000)],
           "geomean": {"batch 1, 1 thread": eie_geomean(4.0, 4.0), "batch 64, 1 thread": eie_geomean(0.95, 2.8)}}

    def test_each_layer_is_drawn_as_its_speed_up_over_each_peer(self):
        panels = summarize_eie.plot_panels(self.RUN)
        self.assertEqual([p.heading for p in panels],
                         ["batch 1, 1 thread (plain: CSC loop skipping zero inputs)",
                          "batch 64, 1 thread (plain: CSR product in column panels)"])
        first = panels[0].rows
        self.assertEqual([r.label for r in first], ["L1", "L2", "geometric mean (2)"])
        self.assertEqual(first[0].ratios, {"plain": 2.0, "dense": 8.0})
        self.assertEqual(first[1].ratios, {"plain": 8.0, "dense": 2.0})
        self.assertAlmostEqual(first[2].ratios["plain"], 4.0)
        self.assertAlmostEqual(panels[1].rows[0].ratios["plain"], 0.9)

    def test_the_command_writes_the_plot_beside_its_tables(self):
        with tempfile.TemporaryDirectory() as d:
            run_path, out = os.path.join(d, "run.json"), os.path.join(d, "eie.svg")
            with open(run_path, "w") as f:
                json.dump(self.RUN, f)
            p = subprocess.run([sys.executable, os.path.join(BENCH, "summarize_eie.py"), run_path, "--plot", out],
                               capture_output=True, text=True)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("| L2 | csr | 50 | 100 | 200 | 400 | 2.00 | 4.00 | 8.00 |", p.stdout)
            with open(out) as f:
                self.assertEqual(len(bars(f.read())), 2 * 2 * 3)  # two panels of two layers and a mean

    def test_a_file_that_is_not_a_run_is_refused_naming_the_layer_and_field(self):
        with tempfile.TemporaryDirectory() as d:
            run = json.loads(json.dumps(self.RUN))
            run["layers"][1]["plain_us"] = 0
            cases = {"not json": "not a `sparrow bench --eie --json` run",
                     json.dumps({"layers": [], "geomean": {}}): "no 'layers' list",
                     json.dumps(run): "layer 2 (L2): field 'plain_us' is 0"}
            for k, (text, message) in enumerate(cases.items()):
                path, out = os.path.join(d, f"run{k}.json"), os.path.join(d, "eie.svg")
                with open(path, "w") as f:
                    f.write(text)
                p = subprocess.run([sys.executable, os.path.join(BENCH, "summarize_eie.py"), path, "--plot", out],
                                   capture_output=True, text=True)
                self.assertEqual(p.returncode, 1, p.stderr)
                self.assertIn(f"summarize_eie.py: error: {path}: ", p.stderr)
                self.assertIn(message, p.stderr)
                self.assertFalse(os.path.exists(out))

    def test_of_several_runs_the_median_one_is_drawn(self):
        with tempfile.TemporaryDirectory() as d:
            paths = []
            for k, dense in enumerate([1.0, 3.0, 2.0]):  # by the batch-1 geomean over the dense peer
                r = json.loads(json.dumps(self.RUN))
                r["geomean"]["batch 1, 1 thread"]["speedup_vs_dense"] = dense
                r["layers"][0]["plain_us"] = 100 * (k + 2)  # L1 at batch 1: 2x, 3x or 4x over plain
                paths.append(os.path.join(d, f"run{k}.json"))
                with open(paths[-1], "w") as f:
                    json.dump(r, f)
            out = os.path.join(d, "eie.svg")
            p = subprocess.run([sys.executable, os.path.join(BENCH, "summarize_eie.py"), *paths, "--plot", out],
                               capture_output=True, text=True)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("Tables of run 3", p.stdout)
            with open(out) as f:
                self.assertEqual(bars(f.read())[0][4], 4.0)  # the third run's L1


if __name__ == "__main__":
    unittest.main()
