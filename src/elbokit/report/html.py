"""A self-contained HTML page: inline CSS, plots embedded as PNG data URIs."""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 70rem; color: #1d2329; line-height: 1.45; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
.sub { color: #5b6670; margin-top: 0; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(30rem, 1fr)); gap: 1.2rem; }
figure { margin: 0; background: #fafbfc; border: 1px solid #e3e7eb; border-radius: 6px; padding: .6rem; }
figure img { width: 100%; height: auto; display: block; }
figcaption { font-size: .9rem; color: #3d4852; margin-top: .4rem; }
table { border-collapse: collapse; font-size: .92rem; margin: .6rem 0; }
td, th { border-bottom: 1px solid #e3e7eb; padding: .25rem .7rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
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


def png_data_uri(fig) -> str:
    """Render a matplotlib figure to a PNG data URI and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


@dataclass
class Page:
    """An HTML report under construction."""

    title: str
    subtitle: str = ""
    sections: list[str] = field(default_factory=list)

    def figure(self, fig, caption: str) -> str:
        return (f'<figure><img alt="{html.escape(caption)}" src="{png_data_uri(fig)}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    def add(self, heading: str, *blocks: str, grid: bool = True) -> None:
        body = "".join(blocks)
        if grid:
            body = f'<div class="grid">{body}</div>'
        self.sections.append(f"<h2>{html.escape(heading)}</h2>{body}")

    def table(self, header: list[str], rows: list[list]) -> str:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                       for row in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def render(self) -> str:
        return (
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style>{_SELF_CHECK}</head>"
            f"<body><h1>{html.escape(self.title)}</h1><p class='sub'>{html.escape(self.subtitle)}</p>"
            + "".join(self.sections) + "</body></html>"
        )
