"""The report's figures: drawn in worker processes, embedded as palette PNGs, SVG files beside the page."""
import base64
import io
import re

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from actconv import plots
from actconv.report.figures.common import _figure
from actconv.report.render import render_figure, to_png
from actconv.report import write_report
from test_report import EVIL, small_study, to_store

# The report of the shared test store (conftest's `report_written`) was 1,089,800 bytes when
# every figure was embedded as a full-colour PNG; palette PNGs bring it to about 400,000.
LIGHT_PAGE_BYTES = 600_000


def figures_on(page: str) -> dict:
    """stem -> (the embedded PNG's bytes, the SVG the caption links to)."""
    found = re.findall(r"<figure id='fig-([^']+)'><img [^>]*src='data:image/png;base64,([^']+)'>"
                       r".*?<a href='([^']+)'>", page)
    return {stem: (base64.b64decode(b64), href) for stem, b64, href in found}


def test_every_figure_has_its_png_and_svg_beside_the_page(report_written):
    out, index = report_written
    page = index.read_text()
    figs = figures_on(page)
    figdir = out / "report" / "figures"
    live = page.count("<figure class='live'")  # interactive: no file of their own
    assert len(figs) == page.count("<figure ") - live == len(list(figdir.glob("*.svg"))) > 5
    for stem, (png, href) in figs.items():
        assert href == f"figures/{stem}.svg"
        svg = (index.parent / href).read_text()
        assert svg.lstrip().startswith("<?xml") and svg.rstrip().endswith("</svg>")
        assert (figdir / f"{stem}.png").read_bytes() == png  # the page shows the file beside it


def test_embedded_figures_are_palette_pngs_and_the_page_is_light(report_written):
    _, index = report_written
    figs = figures_on(index.read_text())
    modes = {Image.open(io.BytesIO(png)).mode for png, _ in figs.values()}
    assert modes == {"P"}
    size = Image.open(io.BytesIO(figs["mlp_original-relu_family-batch"][0])).size
    assert size == (680, 410)  # one panel (4.2 + 2.6) x (3.4 + 0.7) in at dpi 100: as sharp as before
    assert index.stat().st_size < LIGHT_PAGE_BYTES


def _drawn_and_palette(fig):
    """The figure's full-colour pixels and those of its palette PNG."""
    png = to_png(fig, 100)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    full = np.asarray(canvas.buffer_rgba())[..., :3].astype(int)
    return full, np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def test_line_art_palette_keeps_the_white_background_the_grid_and_the_bands():
    fig, axes = _figure(1, 2)
    x = np.arange(11.0)
    for ax in axes.flat:
        for i, act in enumerate(list(plots.STYLES)[:21]):
            st = plots.style(act)
            ax.plot(x, 0.1 * x + i, color=st["color"], marker=st["marker"])
            ax.fill_between(x, i - 0.3, i + 0.3, color=st["color"], alpha=0.15)
    full, palette = _drawn_and_palette(fig)
    assert (palette[0, 0] == 255).all()  # the octree's background bucket averages to off-white
    assert np.abs(full - palette).mean() < 3
    visible = np.abs(full - 255).max(axis=2) > 8
    assert (palette[visible] != 255).any(axis=1).mean() > 0.95  # no faint band turns white
    fig, axes = _figure(1, 1)
    axes[0, 0].plot([0, 1], [0, 1])
    full, palette = _drawn_and_palette(fig)
    grid = (full.max(axis=2) == full.min(axis=2)) & (full[..., 0] > 200) & (full[..., 0] < 235)
    assert grid.sum() > 1000 and (palette[grid] != 255).any(axis=1).mean() > 0.95


def test_a_colour_bar_keeps_its_gradient():
    fig = Figure(layout="constrained")
    ax = fig.subplots()
    fig.colorbar(ax.imshow(np.linspace(0, 1, 400).reshape(20, 20)), ax=ax)
    _, palette = _drawn_and_palette(fig)
    # Median cut: 254 colours here; the octree would band it into 89.
    assert len(np.unique(palette.reshape(-1, 3), axis=0)) > 200


def test_batch_loss_lines_are_rasterised_in_the_svg(report_written):
    out, _ = report_written
    figdir = out / "report" / "figures"
    batch = (figdir / "mlp_original-relu_family-batch.svg").read_text()
    dynamics = (figdir / "mlp_original-dynamics.svg").read_text()
    # One embedded picture per panel holds the batch-loss lines; the fit lines stay vectors.
    assert batch.count("<image ") >= 1 and dynamics.count("<image ") == 2
    assert "data:image/png;base64," in batch
    regression = next(figdir.glob("*-regression.svg")).read_text()
    assert "<image " not in regression  # a few points per line: nothing to rasterise


def test_figures_drawn_in_workers_equal_those_drawn_in_one_process(tmp_path):
    pngs = {}
    for jobs in (1, 2):
        out = tmp_path / str(jobs)
        to_store(small_study(EVIL), out, EVIL)
        write_report(out, jobs=jobs)
        pngs[jobs] = {p.name: p.read_bytes() for p in (out / "report" / "figures").glob("*.png")}
    assert pngs[1] and pngs[1] == pngs[2]


def test_svg_text_is_text_and_each_format_is_one_draw(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2), layout="constrained")
    fig.subplots().set_title("a searchable title")
    calls = []
    draw = fig.draw
    fig.draw = lambda renderer: (calls.append(1), draw(renderer))[1]
    render_figure(fig, tmp_path / "f", 50)
    # A figure with any layout engine (a placeholder too) is drawn twice by savefig.
    assert len(calls) == 2  # one for the PNG (layout solved there), one for the SVG
    svg = (tmp_path / "f.svg").read_text()
    assert ">a searchable title</text>" in svg  # not glyph outlines


def test_figures_keep_the_page_order_though_the_diagnostics_start_first(report_written):
    _, index = report_written
    page = index.read_text()
    sections = re.findall(r"<h3(?: id='[^']*')?>([^<]+)</h3>", page)
    inside = sections.index("Inside the networks: per-layer diagnostics")
    assert sections.index("Final and starting losses") < inside  # as the sections always stood
    heading = page.index("<h3>Inside the networks: per-layer diagnostics</h3>")
    assert page.rindex("-heatmap'>") < heading < page.index("<figure id='fig-logit-floor'>")


def test_each_figure_section_is_one_heading(tmp_path):
    from test_analysis import synth
    # Two sizes: the loss, accuracy and regression figures of each (model, n) used to
    # alternate, each run of them under a heading of its own.
    to_store(synth({"relu": (2.3, 0.3, 1.0), "tanh": (2.3, 0.5, 0.8)}, n_train=(200, 400)), tmp_path, "synthetic")
    headings = re.findall(r"<h[23](?: id='[^']*')?>([^<]+)</h[23]>", write_report(tmp_path, jobs=1).read_text())
    assert headings.count("Loss and accuracy per model and training-set size") == 1
    assert len(headings) == len(set(headings))
