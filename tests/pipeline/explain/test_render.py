"""Orientation: a marker at the patient's left-anterior-superior shows on the L, A and S sides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch

from pipeline.explain.render import Panel, panels_figure, panels_for, render_panels, window
from pipeline.explain.spatial import map_to_scan, write_map_nifti
from pipeline.figures import MIN_FONTSIZE, lay_out, plt
from pipeline.io.nifti import read_nifti

SIDES = {"left": lambda r, c, shape: c < shape[1] / 2, "right": lambda r, c, shape: c >= shape[1] / 2,
         "top": lambda r, c, shape: r < shape[0] / 2, "bottom": lambda r, c, shape: r >= shape[0] / 2}


def _phantom(tmp_path: Path, affine: np.ndarray) -> Path:
    """A 20x24x16 volume stored with ``affine``; a bright marker at the patient's left-anterior-superior."""
    data = np.zeros((20, 24, 16), dtype=np.float32)
    ras = nib.affines.apply_affine(affine, np.stack(np.meshgrid(*[np.arange(s) for s in data.shape], indexing="ij"), -1))
    # left = most negative R, anterior = most positive A, superior = most positive S
    score = -ras[..., 0] + ras[..., 1] + ras[..., 2]
    index = np.unravel_index(np.argmax(score), data.shape)
    data[tuple(slice(max(0, i - 1), i + 2) for i in index)] = 100.0
    path = tmp_path / "phantom.nii"
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


@pytest.mark.parametrize("orientation", ["RAS", "LPS", "PSL"])
def test_marker_at_left_anterior_superior_shows_on_those_sides(tmp_path: Path, orientation: str) -> None:
    axes = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}
    affine = np.zeros((4, 4))
    for column, letter in enumerate(orientation):
        row, sign = axes[letter]
        affine[row, column] = sign * 1.5
    affine[3, 3] = 1
    volume = read_nifti(_phantom(tmp_path, affine)).data  # canonical RAS+, as ingest stores scans
    panels = panels_for(volume.astype(np.float32), volume.astype(np.float32))
    assert [p.name for p in panels] == ["axial", "coronal", "sagittal"]
    for panel in panels:
        rows, cols = np.nonzero(panel.overlay > 50)
        r, c = rows.mean(), cols.mean()
        for letter in "LAS":
            edges = [edge for edge, shown in panel.letters.items() if shown == letter]
            for edge in edges:
                assert SIDES[edge](r, c, panel.overlay.shape), (orientation, panel.name, letter, edge, r, c)
        assert sum(letter in panel.letters.values() for letter in "LAS") == 2  # each plane shows two of the three
    png = render_panels(panels, window(volume, None), "phantom")
    assert png[:4] == b"\x89PNG"


def test_map_back_onto_the_scan_grid_keeps_the_affine(tmp_path: Path) -> None:
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    path = _phantom(tmp_path, affine)
    params = {"dims": 3, "input_size": [8, 12, 10], "spacing": None, "intensity": "minmax"}
    data = np.asarray(nib.load(str(path)).dataobj)
    model_space = np.transpose(data, (2, 1, 0))  # (S, A, R), as the 3D model sees it
    small = torch.nn.functional.interpolate(torch.from_numpy(model_space)[None, None], size=(8, 12, 10), mode="trilinear")[0, 0]
    back, back_affine = map_to_scan(small.numpy(), path, params)
    assert back.shape == data.shape and np.allclose(back_affine, affine)
    assert np.unravel_index(np.argmax(back), back.shape) == pytest.approx(np.unravel_index(np.argmax(data), data.shape), abs=2)
    write_map_nifti(tmp_path / "map.nii", back, back_affine)
    assert np.allclose(nib.load(str(tmp_path / "map.nii")).affine, affine)


LONG_TITLE = "TP: p=0.908 (threshold 0.500), gradcam on layer2 (8 x 8 map for a 64 x 64 input)"


def _outside(figure: Any) -> list[str]:
    """Texts (suptitle, axes titles) whose rendered extent leaves the figure."""
    renderer = figure.canvas.get_renderer()
    texts = [*figure.texts, *(axis.title for axis in figure.axes)]
    return [t.get_text() for t in texts if not figure.bbox.contains(*t.get_window_extent(renderer).p0)
            or not figure.bbox.contains(*t.get_window_extent(renderer).p1)]


def test_a_long_panel_title_is_wrapped_inside_the_figure() -> None:
    panel = Panel("axial", np.random.default_rng(0).random((28, 28)), None,
                  {"left": "R", "right": "L", "top": "A", "bottom": "P"})
    unfitted = panels_figure([panel], (0.0, 1.0), LONG_TITLE)
    unfitted.tight_layout()
    assert _outside(unfitted) == [LONG_TITLE]  # the title is long enough to be clipped (as "P: p=0.908 ...")
    plt.close(unfitted)
    figure = panels_figure([panel], (0.0, 1.0), LONG_TITLE)
    lay_out(figure)  # what render_panels does before saving
    assert _outside(figure) == []
    assert " ".join(figure.texts[0].get_text().split()) == LONG_TITLE  # wrapped, nothing lost
    plt.close(figure)
    assert render_panels([panel], (0.0, 1.0), LONG_TITLE)[:4] == b"\x89PNG"


def test_one_word_wider_than_the_room_shrinks_then_breaks() -> None:
    figure = plt.figure(figsize=(1.0, 1.0), dpi=100)
    text = figure.suptitle("integrated_gradients_" * 4, fontsize=12)
    lay_out(figure)
    renderer = figure.canvas.get_renderer()
    assert text.get_fontsize() == MIN_FONTSIZE and "\n" in text.get_text()
    assert text.get_window_extent(renderer).width <= figure.bbox.width
    assert text.get_text().replace("\n", "") == "integrated_gradients_" * 4
    plt.close(figure)
