"""Speed-ups as horizontal bars on a logarithmic axis from 1x, as one SVG: panels side by side (two
a row), a row of bars per model or layer, one bar per series, an optional range line over each bar
(e.g. over the rounds of a run), and summary rows (geometric means) in bold. A bar to the right of
the 1x line is that much faster than the peer, one to the left that much slower; every bar of a
panel has one end on the line. Standard library only.
"""
import math
import os
from typing import NamedTuple
from xml.sax.saxutils import escape

PANEL_WIDTH = 500
LABEL_WIDTH = 150
LEFT_PAD = 36  # between the labels and the axis, for the value beside a bar that ends left of 1x
VALUE_ROOM = 44  # right of the axis, for the value printed at a bar's end
BAR = 8
TOP = 58
PANEL_HEAD = 26
AXIS_ROOM = 40
MIN_WIDTH = 860  # room for the title, the subtitle and the legend
MIN_TICK_GAP = 36  # pixels between tick labels
LEGEND_CHAR = 7  # about the width of one character of the legend's 12 px text


class Series(NamedTuple):
    key: str  # in Row.ratios and Row.spreads
    legend: str
    colour: str


class Row(NamedTuple):
    label: str
    ratios: dict  # Series.key -> speed-up (> 0 and finite: the caller checks)
    spreads: dict  # Series.key -> (lowest, highest) around the ratio, where known
    summary: bool  # a geometric mean over rows, drawn in bold


class Panel(NamedTuple):
    heading: str
    rows: list


def geomean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values))


def mean_row(label, rows, series):
    """The rows' geometric mean per series, as a summary row."""
    return Row(label, {s.key: geomean([r.ratios[s.key] for r in rows]) for s in series}, {}, True)


def axis_range(panels):
    """Powers of two around every ratio, every range end and 1x: (lowest, highest) exponents."""
    ratios = [v for p in panels for row in p.rows
              for v in list(row.ratios.values()) + [end for pair in row.spreads.values() for end in pair]]
    lo = min(-1, math.floor(math.log2(min(ratios))))
    hi = max(1, math.ceil(math.log2(max(ratios))))
    return lo, hi


def tick_exponents(lo, hi, plot_w):
    """The powers of two to label: every one, or every second, fourth... so that labels stay
    MIN_TICK_GAP apart; always 1x."""
    step = 1
    while (hi - lo) / step * MIN_TICK_GAP > plot_w:
        step *= 2
    return [e for e in range(lo, hi + 1) if e % step == 0]


def tick_label(exponent):
    """2^e as '4x', '1x' or '1/8x'."""
    return f"{2 ** exponent}x" if exponent >= 0 else f"1/{2 ** -exponent}x"


def value_label(ratio):
    return f"{ratio:.2f}x"


def row_height(series):
    return len(series) * BAR + 8


def panel_svg(x0, y0, panel, series, lo, hi, axis_label):
    """The panel's SVG elements and its height."""
    plot_w = PANEL_WIDTH - LABEL_WIDTH - LEFT_PAD - VALUE_ROOM
    left = x0 + LABEL_WIDTH + LEFT_PAD

    def x_of(ratio):
        return left + (math.log2(ratio) - lo) / (hi - lo) * plot_w

    height = len(panel.rows) * row_height(series)
    top = y0 + PANEL_HEAD
    parts = [f'<text x="{x0 + PANEL_WIDTH / 2:.1f}" y="{y0 + 16}" text-anchor="middle" font-weight="bold">'
             f'{escape(panel.heading)}</text>']
    for e in tick_exponents(lo, hi, plot_w):
        x = x_of(2.0 ** e)
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + height}" stroke="#ddd"/>')
        parts.append(f'<text x="{x:.1f}" y="{top + height + 16}" text-anchor="middle" font-size="11">'
                     f'{tick_label(e)}</text>')
    one = x_of(1.0)
    for i, row in enumerate(panel.rows):
        y = top + i * row_height(series) + 4
        weight = ' font-weight="bold"' if row.summary else ""
        parts.append(f'<text x="{left - LEFT_PAD - 4}" y="{y + BAR + 4}" text-anchor="end" font-size="12"{weight}>'
                     f'{escape(row.label)}</text>')
        for k, s in enumerate(series):
            parts += bar_svg(row, s, y + k * BAR, one, x_of)
    parts.append(f'<line x1="{one:.1f}" y1="{top - 4}" x2="{one:.1f}" y2="{top + height}" stroke="#333" '
                 f'stroke-width="1.5"/>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{top + height + 32}" text-anchor="middle" font-size="11">'
                 f'{escape(axis_label)}</text>')
    return parts, PANEL_HEAD + height + AXIS_ROOM


def bar_svg(row, s, y, one, x_of):
    """One bar from the 1x line to its ratio, its range line, and its value beside the far end (on
    the side the printed value is on: '1.00x' for 0.999 stands right of the line)."""
    ratio = row.ratios[s.key]
    end = x_of(ratio)
    parts = [f'<rect x="{min(one, end):.1f}" y="{y}" width="{abs(end - one):.1f}" height="{BAR}" '
             f'fill="{s.colour}" data-ratio="{ratio:.4f}"><title>{escape(row.label)}, '
             f'{escape(s.legend)}: {value_label(ratio)}</title></rect>']
    low = high = end
    if s.key in row.spreads:
        low, high = (x_of(v) for v in row.spreads[s.key])
        parts.append(f'<line x1="{low:.1f}" y1="{y + BAR / 2}" x2="{high:.1f}" y2="{y + BAR / 2}" '
                     f'stroke="#222" stroke-width="1" class="range"/>')
    faster = float(value_label(ratio)[:-1]) >= 1
    anchor, at = ("start", max(end, high) + 3) if faster else ("end", min(end, low) - 3)
    parts.append(f'<text x="{at:.1f}" y="{y + BAR - 1}" text-anchor="{anchor}" font-size="9">'
                 f'{value_label(ratio)}</text>')
    return parts


def ratio_bars_svg(title, subtitle, series, panels, axis_label, range_legend=None):
    """The whole figure; `range_legend` names the range lines in the legend where rows have them."""
    lo, hi = axis_range(panels)
    columns = 2 if len(panels) > 1 else 1
    width = max(columns * PANEL_WIDTH, MIN_WIDTH)
    x0 = (width - columns * PANEL_WIDTH) / 2  # a lone panel stands in the middle
    body, y, line_height = [], TOP, 0
    for i, panel in enumerate(panels):
        column = i % columns
        if column == 0 and i:
            y += line_height + 10
            line_height = 0
        parts, h = panel_svg(x0 + column * PANEL_WIDTH, y, panel, series, lo, hi, axis_label)
        body += parts
        line_height = max(line_height, h)
    height = y + line_height + 6
    legend, lx = [], 20
    for s in series:
        legend.append(f'<rect x="{lx}" y="40" width="12" height="10" fill="{s.colour}"/>')
        legend.append(f'<text x="{lx + 17}" y="49" font-size="12">{escape(s.legend)}</text>')
        lx += 40 + LEGEND_CHAR * len(s.legend)
    if range_legend:
        legend.append(f'<line x1="{lx}" y1="45" x2="{lx + 20}" y2="45" stroke="#222"/>')
        legend.append(f'<text x="{lx + 25}" y="49" font-size="12">{escape(range_legend)}</text>')
    head = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif">',
            f'<rect width="{width}" height="{height}" fill="white"/>',
            f'<text x="{width / 2:.1f}" y="18" text-anchor="middle" font-size="15" font-weight="bold">'
            f'{escape(title)}</text>',
            f'<text x="{width / 2:.1f}" y="33" text-anchor="middle" font-size="11">{escape(subtitle)}</text>']
    return "\n".join(head + legend + body + ["</svg>"]) + "\n"


def write_atomically(path, text):
    """Writes to a temporary name beside `path`, then renames it into place. On failure the
    OSError propagates, `path` is as it was and the temporary file is gone."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
