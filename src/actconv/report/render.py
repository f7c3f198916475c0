"""Drawing figures in forked worker processes while the report goes on, and saving each as an
embedded 256-colour PNG and an SVG with text as text."""
import gc
import io
import multiprocessing
import os
import re
from pathlib import Path

import matplotlib


_JOBS: dict = {}


class FigureWriter:
    """Draws and saves figures as PNG and SVG in forked worker processes while the caller
    goes on; `results()` gives (section, stem, caption, PNG) in the order submitted."""

    def __init__(self, figdir: Path, dpi: int, jobs: int):
        self.figdir, self.dpi, self.jobs = figdir, dpi, jobs
        self.used, self.batches, self.pools = set(), [], []

    def __enter__(self):
        if self.jobs > 1:
            _warm_up()
        return self

    def __exit__(self, *exc):
        for pool in self.pools:
            pool.terminate()  # the results are in (or an error stops the report)
            pool.join()
        _JOBS.clear()
        gc.unfreeze()

    def submit(self, figures) -> None:
        """Start drawing `figures`: in a pool forked now, so its workers see the data as it is."""
        stems = [[_slug(slug, self.used) for slug in (f.slug, *(s for s, _ in f.also))] for f in figures]
        jobs = [(f.draw, [self.figdir / stem for stem in st], self.dpi) for f, st in zip(figures, stems)]
        pending = {}
        # The loaded tables are long-lived: out of the collector's sight, its passes while
        # figures are built no longer walk them (a fifth of building the figures), and a
        # forked worker's passes no longer touch (and so copy) the parent's pages.
        gc.freeze()
        if min(self.jobs, len(jobs)) > 1 and "fork" in multiprocessing.get_all_start_methods():
            batch = len(self.batches)
            _JOBS[batch] = jobs  # set before the fork: the workers inherit them
            pool = multiprocessing.get_context("fork").Pool(min(self.jobs, len(jobs)))
            self.pools.append(pool)
            pending = {i: pool.apply_async(_render_job, (batch, i)) for i in range(len(jobs))}
            pool.close()  # its workers exit when their batch is drawn: an idle worker keeps its memory
        self.batches.append([(f, st, pending.get(i) or _render_call(*jobs[i]))
                             for i, (f, st) in enumerate(zip(figures, stems))])

    def results(self) -> list:
        """Per batch submitted, its figures as (section, stem, caption, PNG bytes)."""
        out = []
        for batch in self.batches:
            drawn = []
            for f, stems, pngs in batch:
                pngs = pngs if isinstance(pngs, list) else pngs.get()
                captions = [f.caption] + [c for _, c in f.also]
                drawn += [(f.section, stem, c, png) for stem, c, png in zip(stems, captions, pngs)]
            out.append(drawn)
        return out


def in_child(fn, *args):
    """fn(*args) in a forked child process that exits when done: what it imports (torch, ~480 MB,
    for the activations' derivatives) never lands in the report's process, nor in the figure
    workers forked from it, which would each hold their own copy."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return fn(*args)
    with multiprocessing.get_context("fork").Pool(1) as pool:
        return pool.apply(fn, args)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        return os.cpu_count() or 1


def _warm_up() -> None:
    """Load the fonts and fill matplotlib's text caches once, before the workers fork: each
    worker would otherwise fill them again (a fifth of their time on the seed preset)."""
    from matplotlib.figure import Figure
    fig = Figure(figsize=(3, 2), layout="constrained")
    ax = fig.subplots()
    ax.semilogy([0, 1], [0.01, 100], marker="o", label="warm")
    ax.fill_between([0, 1], [0.1, 1], [1, 10], alpha=0.2)
    ax.errorbar([0.5], [1.0], yerr=[0.5])
    fig.colorbar(ax.imshow([[1.0, 2.0]], extent=(0, 1, 1, 2)), ax=ax)
    ax.set(title="t", xlabel="x", ylabel="y")
    fig.legend(loc="outside right")
    fig.suptitle("s")
    to_png(fig, 50)
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(io.BytesIO(), format="svg")


def _render_job(batch: int, i: int) -> list:
    return _render_call(*_JOBS[batch][i])


def _render_call(draw, paths: list, dpi: int) -> list:
    """Draw (one figure, or a list for a job that draws several from one computation) and save."""
    # Titles at a fixed height: placing them by the ticks above (there are none) asked each
    # axis its extent once more per draw, an eighth of the drawing time; the pixels are equal.
    with matplotlib.rc_context({"axes.titley": 1.0}):
        figs = draw()
    figs = figs if isinstance(figs, list) else [figs]
    return [render_figure(fig, path, dpi) for fig, path in zip(figs, paths, strict=True)]


def render_figure(fig, path: Path, dpi: int) -> bytes:
    """Save `fig` as path.png and path.svg; return the PNG's bytes."""
    png = to_png(fig, dpi)
    (path.parent / f"{path.name}.png").write_bytes(png)  # a user's model name may hold a dot
    # The layout is solved for the PNG already; solving it again for the SVG would cost a
    # third of the figure's time and give the same positions. No engine at all, not "none":
    # savefig draws a figure that has any engine (a placeholder too) twice.
    with matplotlib.rc_context({"figure.autolayout": False, "figure.constrained_layout.use": False}):
        fig.set_layout_engine(None)
    # Text as text (not glyph outlines): an eighth faster to write, and searchable and
    # editable in the SVG; dpi is that of the rasterised line art.
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(path.parent / f"{path.name}.svg", format="svg", dpi=dpi)
    return png


def to_png(fig, dpi: int) -> bytes:
    """The figure as a PNG of at most 256 colours: a quarter of the bytes of a full-colour one.

    Line art has few colours, so a palette loses nothing visible. It is cut by the fast octree
    (a twelfth of median cut's time, which was a tenth of a figure's) with the background's
    bucket set back to the background's colour, which the bucket's average had tinted. Figures
    holding an image or a colour bar (smooth gradients) keep median cut: the octree bands them.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image
    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    image = Image.frombuffer("RGBA", canvas.get_width_height(physical=True),
                             canvas.buffer_rgba()).convert("RGB")
    if _gradients(fig):
        image = image.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    else:
        background = image.getpixel((0, 0))
        image = image.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
        palette, k = image.getpalette(), image.getpixel((0, 0))
        palette[3 * k:3 * k + 3] = background
        image.putpalette(palette)
    buf = io.BytesIO()
    image.save(buf, format="png", compress_level=6)
    return buf.getvalue()


def _gradients(fig) -> bool:
    """Whether `fig` holds an image or a colour mesh (a heat map, a colour bar)."""
    from matplotlib.collections import QuadMesh
    return any(ax.images or any(isinstance(c, QuadMesh) for c in ax.collections) for ax in fig.axes)


def _slug(text: str, used: set) -> str:
    """A file name from a label a user chose: only safe characters, never a repeat."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "figure"
    stem, k = base, 2
    while stem in used:
        stem, k = f"{base}-{k}", k + 1
    used.add(stem)
    return stem

