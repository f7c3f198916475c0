"""The page's HTML pieces: its style sheet, escaped tables, figures and verdict tables."""
import base64
import html

import numpy as np
import pandas as pd

from ..analysis.tables import fmt

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1400px;
padding:1rem 2rem;color:#222;line-height:1.45}
h1{margin-bottom:.2rem} h2{border-bottom:1px solid #ccc;padding-bottom:.2rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.25rem .5rem;vertical-align:top;text-align:left}
th{background:#f3f3f3} td.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{font-weight:600;white-space:nowrap;padding:.1rem .4rem;border-radius:3px}
.supported{background:#d9f0e3;color:#0b5a2c} .not-supported{background:#f8dcdc;color:#7a1010}
.inconclusive{background:#eee;color:#444}
.reproduced{background:#d9f0e3;color:#0b5a2c} .not-reproduced{background:#f8dcdc;color:#7a1010}
figure{margin:1.2rem 0} figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9rem;color:#444} .meta{color:#555;font-size:.9rem}
details{margin:.6rem 0} summary{cursor:pointer;font-weight:600}
.scroll{max-height:28rem;overflow:auto}
code{background:#f5f5f5;padding:0 .2rem;overflow-wrap:anywhere} .wide{overflow-x:auto}
figure.live{border:1px solid #eee;padding:.3rem} .verdict-grid td{white-space:nowrap}
"""


def verdict_table(ident: str, heading: str, intro: str, table, labels=None) -> list:
    """A `claims.evaluate` table (claim, scope, verdict, evidence); nothing when there are no
    rows. `labels`: {claim id: {verdict: what to show}} (paper presets show 'reproduced')."""
    if table is None or table.empty:
        return []
    out = [f"<h2 id='{ident}-heading'>{esc(heading)}</h2>", f"<p>{intro}</p>",
           f"<table id='{ident}' class='findings'><thead><tr><th>claim</th><th>scope</th>"
           "<th>verdict</th><th>evidence</th></tr></thead><tbody>"]
    for r in table.itertuples():
        shown = (labels or {}).get(r.id, {}).get(r.verdict, r.verdict)
        cls = shown.replace(" ", "-")
        out.append(f"<tr><td><strong>({esc(r.id)})</strong> {esc(r.claim)}</td><td>{esc(r.scope)}</td>"
                   f"<td><span class='verdict {esc(cls)}'>{esc(shown)}</span></td>"
                   f"<td>{esc(r.evidence)}</td></tr>")
    out.append("</tbody></table>")
    return out


def figure_html(stem: str, caption: str, png: bytes) -> str:
    """A figure embedded in the page (it opens offline), captioned with its SVG beside the page."""
    b64 = base64.b64encode(png).decode("ascii")
    return (f"<figure id='fig-{esc(stem)}'><img alt='{esc(caption)}' src='data:image/png;base64,{b64}'>"
            f"<figcaption>{esc(caption)} (<a href='figures/{esc(stem)}.svg'><code>figures/{esc(stem)}.svg"
            f"</code></a>)</figcaption></figure>")


def html_table(df: pd.DataFrame) -> str:
    """An HTML table with every cell escaped and numbers right-aligned."""
    head = "".join(f"<th>{esc(c)}</th>" for c in df.columns)
    rows = []
    for rec in df.itertuples(index=False):
        cells = []
        for v in rec:
            if isinstance(v, (bool, np.bool_)):
                cells.append(f"<td>{'yes' if v else 'no'}</td>")
            elif isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
                cells.append(f"<td class='num'>{esc(_num(v))}</td>")
            else:
                cells.append(f"<td>{esc('' if v is None or v is pd.NA else v)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<div class='wide'><table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}"
            f"</tbody></table></div>")


def _num(v) -> str:
    if isinstance(v, (int, np.integer)):
        return str(v)
    if np.isnan(v):
        return ""
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e6 else fmt(v)


def interval_text(low, high) -> str:
    return "" if not (np.isfinite(low) and np.isfinite(high)) else f"[{fmt(low)}, {fmt(high)}]"


def esc(x) -> str:
    return html.escape(str(x), quote=True)
