"""A self-contained HTML page: inline CSS, plots embedded as PNG data URIs.

Every figure and table of a page can carry the table of numbers it was drawn
from (:class:`Table`); :meth:`Page.write` saves each as a CSV file in a
folder beside the page (``report.html`` -> ``report-data/NAME.csv``) and the
page links to it under the figure.  The plots are drawn from those same
tables, so what the CSV holds is what the picture shows.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import numbers
from dataclasses import dataclass, field
from pathlib import Path

# One resolution for every figure: rendered at DPI, displayed at its size in
# inches at CSS_PX_PER_INCH (so text is the same size in every figure and sharp
# on high-density screens).
DPI = 144
CSS_PX_PER_INCH = 96

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 78rem; color: #1d2329; line-height: 1.45; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
.sub { color: #5b6670; margin-top: 0; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(34rem, 1fr)); gap: 1.2rem;
        align-items: start; }
figure { margin: 0; background: #fafbfc; border: 1px solid #e3e7eb; border-radius: 6px; padding: .6rem;
         overflow-x: auto; }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figcaption { font-size: .9rem; color: #3d4852; margin-top: .4rem; }
table { border-collapse: collapse; font-size: .92rem; margin: .6rem 0; }
td, th { border-bottom: 1px solid #e3e7eb; padding: .25rem .7rem; text-align: right; vertical-align: top; }
th:first-child, td:first-child { text-align: left; }
td.text, th.text { text-align: left; max-width: 40rem; }
.headline { display: flex; flex-wrap: wrap; gap: .6rem; margin: 1rem 0; padding: 0; }
.headline div { background: #f1f5f9; border-radius: 6px; padding: .4rem .8rem; }
.headline b { display: block; font-size: 1.1rem; }
.headline span { font-size: .8rem; color: #5b6670; }
.data { font-size: .8rem; }
a { color: #1b5fa8; }
"""

# Records in the page itself whether every image decoded and whether any
# script error happened, so a headless browser's DOM dump can check it.
_SELF_CHECK = """
<script>
window.addEventListener("error", function (e) {
  document.body.dataset.errors = (document.body.dataset.errors || "") + e.message + ";";
});
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.dataset.imagesLoaded = ok + "/" + imgs.length;
});
</script>
"""


_DATA_DIR = "\x00data-dir\x00"  # where the CSV files are, filled in by render()


def png_data_uri(fig) -> tuple[str, int]:
    """Render a matplotlib figure to a PNG data URI and close it; also its display width (px)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    data = buf.getvalue()
    width_px = int.from_bytes(data[16:20], "big")  # the PNG header's IHDR width
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return uri, round(width_px * CSS_PX_PER_INCH / DPI)


def format_cell(value) -> str:
    """A table cell as text: integers as they are, floats to 4 significant digits."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        v = float(value)
        if not math.isfinite(v):
            return str(v)
        if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-3):
            return f"{v:.3e}"
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:.1f}"
    return str(value)


@dataclass
class Table:
    """The numbers behind a figure or a table of a report.

    Parameters
    ----------
    name : str
        File stem of its CSV (letters, digits, '-').
    header : list of str
    rows : list of lists
        Raw values (full precision goes to the CSV; the page shows them rounded).
    formats : list of str or None, optional
        Per-column format for the page (``"{:.3f}"``); None: :func:`format_cell`.
    """

    name: str
    header: list
    rows: list
    formats: list | None = None

    def column(self, name: str) -> list:
        j = self.header.index(name)
        return [r[j] for r in self.rows]

    def cells(self, row) -> list[str]:
        formats = self.formats or [None] * len(row)
        return [format_cell(v) if f is None or isinstance(v, str) else f.format(v)
                for v, f in zip(row, formats)]

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.header)
        for row in self.rows:
            writer.writerow([repr(float(v)) if isinstance(v, float) else v for v in row])
        return buf.getvalue()


@dataclass
class Page:
    """An HTML report under construction.

    Attributes
    ----------
    headline : dict of str to str
        The few figures a reader looks for first; shown at the top of the
        page and on the index page.
    tables : dict of str to Table
        Every table and figure's data, written as CSV by :meth:`write`.
    """

    title: str
    subtitle: str = ""
    headline: dict = field(default_factory=dict)
    sections: list[str] = field(default_factory=list)
    tables: dict = field(default_factory=dict)
    data_dir: str = "report-data"

    def _data_link(self, data: Table | None) -> str:
        if data is None:
            return ""
        if data.name in self.tables and self.tables[data.name] is not data:
            raise ValueError(f"two tables of one report are named {data.name!r}.")
        self.tables[data.name] = data
        return f' <a class="data" href="{_DATA_DIR}/{html.escape(data.name)}.csv">data (CSV)</a>'

    def figure(self, fig, caption: str, data: Table | None = None) -> str:
        """A figure with its caption (and a link to the CSV of ``data``)."""
        uri, width = png_data_uri(fig)
        return (f'<figure><img alt="{html.escape(caption)}" width="{width}" src="{uri}">'
                f"<figcaption>{html.escape(caption)}{self._data_link(data)}</figcaption></figure>")

    def table(self, data: Table, caption: str = "", text_columns=(), csv: Table | None = None) -> str:
        """``data`` as an HTML table, with a link to the CSV of ``csv`` (default: ``data``;
        e.g. the full table when the page shows a part); ``text_columns`` are prose."""
        left = {data.header.index(c) for c in text_columns}
        head = "".join(f"<th{' class=text' if j in left else ''}>{html.escape(str(h))}</th>"
                       for j, h in enumerate(data.header))
        body = "".join(
            "<tr>" + "".join(f"<td{' class=text' if j in left else ''}>{html.escape(c)}</td>"
                             for j, c in enumerate(data.cells(row))) + "</tr>"
            for row in data.rows)
        link = self._data_link(data if csv is None else csv)
        cap = f"<figcaption>{html.escape(caption)}{link}</figcaption>"
        return f"<figure><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{cap}</figure>"

    def add(self, heading: str, *blocks: str, grid: bool = True, note: str = "") -> None:
        body = "".join(b for b in blocks if b)
        if not body:
            return
        if grid:
            body = f'<div class="grid">{body}</div>'
        intro = f"<p>{html.escape(note)}</p>" if note else ""
        self.sections.append(f"<h2>{html.escape(heading)}</h2>{intro}{body}")

    def render(self) -> str:
        cards = "".join(f"<div><b>{html.escape(str(v))}</b><span>{html.escape(k)}</span></div>"
                        for k, v in self.headline.items())
        return (
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style>{_SELF_CHECK}</head>"
            f"<body><h1>{html.escape(self.title)}</h1><p class='sub'>{html.escape(self.subtitle)}</p>"
            + (f"<div class='headline'>{cards}</div>" if cards else "")
            + "".join(self.sections) + "</body></html>"
        ).replace(_DATA_DIR, html.escape(self.data_dir))

    def write(self, target, tables) -> Path:
        """Write the page to ``target`` (a path or a claim on it) and its tables as CSV files
        into the folder ``tables`` claims (``<stem>-data`` beside the page), each replaced whole
        (:mod:`elbokit.files`): the folder first, then the page that links to it."""
        from elbokit import files

        self.data_dir = tables.path.name
        headline = Table("headline", ["metric", "value"], [[k, v] for k, v in self.headline.items()])
        self.tables.setdefault("headline", headline)
        csvs = {f"{name}.csv": t.to_csv() for name, t in self.tables.items()}

        def fill(folder):
            for name, text in csvs.items():
                (Path(folder) / name).write_text(text, encoding="utf-8")

        tables.commit(fill, manifest="report-data")
        page = self.render()
        return files.write_output(target, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"),
                                  overwrite=True, what="report file")
