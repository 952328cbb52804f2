"""The figures: the right panels, titles, colours and annotated numbers, read off the matplotlib Figure."""

import numpy as np
import pytest
from matplotlib.colors import to_hex

from robustkit.app import plots


@pytest.fixture()
def drawn(monkeypatch):
    """The Figure objects the plotting functions save, in order."""
    figures = []
    save = plots._save

    def keep(plt, fig, path):
        figures.append(fig)
        return save(plt, fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def test_prediction_grid_has_a_panel_per_image_and_version_titled_with_the_prediction(tmp_path, drawn):
    rng = np.random.default_rng(0)
    grey, colour = rng.random((3, 1, 8, 8)), rng.random((3, 3, 8, 8))
    labels = [0, 1, 2]
    columns = [("clean", grey, [0, 1, 2]), ("adversarial", grey, [0, 2, 1]), ("purified", colour, [0, 1, 0])]
    path = plots.prediction_grid(columns, labels, tmp_path / "grid.png", classes=["zero", "one", "two"])
    assert path.stat().st_size > 1000
    (fig,) = drawn
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 9 and len(fig.axes) == 9
    titles = [ax.get_title() for ax in panels]  # row by row: an image, then its versions
    assert titles == ["zero ✓", "zero ✓", "zero ✓", "one ✓", "two ✗", "one ✓", "two ✓", "one ✗", "zero ✗"]
    colours = [to_hex(ax.title.get_color()) for ax in panels]
    assert colours == [plots.WRONG if "✗" in t else plots.RIGHT for t in titles]
    assert panels[0].images[0].get_array().shape == (8, 8)  # one channel: grey, HWC squeezed
    assert panels[2].images[0].get_array().shape == (8, 8, 3)  # CHW → HWC
    assert [t.get_text() for ax in panels[:3] for t in ax.texts] == ["clean", "adversarial", "purified"]
    assert "true: two" in panels[6].get_ylabel()
    with pytest.raises(ValueError, match="3 images"):
        plots.prediction_grid([("x", grey[:2], [0, 1])], labels, tmp_path / "bad.png")


def test_accuracy_heatmap_annotates_every_cell_on_a_fixed_scale(tmp_path, drawn):
    values = {"FGSM": {"none": 0.12345, "trained": 0.8}, "PGD": {"none": 0.0, "trained": None}}
    plots.accuracy_heatmap(values, tmp_path / "matrix.png", row_title="attack", column_title="defense")
    (fig,) = drawn
    ax = next(a for a in fig.axes if a.images)
    assert [t.get_text() for t in ax.texts] == ["0.12", "0.80", "0.00", "–"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["FGSM", "PGD"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["none", "trained"]
    assert ax.images[0].get_clim() == (0.0, 1.0)
    assert len(fig.axes) == 2  # the heatmap and its colorbar
    assert (tmp_path / "matrix.png").stat().st_size > 1000


def test_score_histogram_of_float32_scores_with_a_range_below_their_precision(tmp_path, drawn):
    """float32 scores of magnitude 1e9 (float32's spacing there is 64) spread over 128: numpy cannot make 40 float32
    bins of them; the figure bins them in float64 instead of stopping the run (a detector on an untrained model)."""
    id_scores = np.full(4, 1e9, dtype=np.float32)
    ood_scores = id_scores + np.float32(128)
    with pytest.raises(ValueError, match="Too many bins"):
        np.histogram_bin_edges(np.concatenate([id_scores, ood_scores]), bins=40)
    plots.score_histogram(id_scores, ood_scores, tmp_path / "hist.png")
    heights = [p.get_height() for p in drawn[0].axes[0].patches]
    assert len(heights) == 80 and sum(h > 0 for h in heights) == 2  # 40 bins per set; each set in one of them
