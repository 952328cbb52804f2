"""imagefolder:PATH?size=N loads folders of mixed-size images (Animals-10 is one)."""

import json

import numpy as np
import pytest
from PIL import Image

from robustkit.app.recipes import load_recipe
from robustkit.app.runner import RecipeOptions
from robustkit.modelling.data import load_dataset

SIZES = [(40, 30), (64, 64), (25, 50), (33, 47)]  # (width, height): landscape, square, portrait, odd


def _mixed_folder(root, per_class=4):
    """root/{train,test}/<class>/*.jpg|png of different sizes; each class has its own colour."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c, (cls, colour) in enumerate((("cat", (200, 40, 40)), ("dog", (40, 40, 200)))):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                w, h = SIZES[(i + c) % len(SIZES)]
                pixels = np.clip(np.array(colour) + rng.integers(-20, 20, (h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.{'png' if i % 2 else 'jpg'}")


def test_mixed_sizes_are_refused_without_size_and_name_the_fix(tmp_path):
    _mixed_folder(tmp_path)
    with pytest.raises(ValueError, match=r"\?size=32"):
        load_dataset(f"imagefolder:{tmp_path}", "test")


def test_size_resizes_every_image_to_a_square(tmp_path):
    _mixed_folder(tmp_path)
    data = load_dataset(f"imagefolder:{tmp_path}?size=16", "test")
    assert data.x.shape == (8, 3, 16, 16) and data.info.shape == (3, 16, 16)
    assert data.info.classes == ("cat", "dog") and data.y.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert data.x.min() >= 0 and data.x.max() <= 1
    red, blue = data.x[data.y == 0].mean(dim=(0, 2, 3)), data.x[data.y == 1].mean(dim=(0, 2, 3))
    assert red[0] > red[2] + 0.3 and blue[2] > blue[0] + 0.3  # colours survive the resize


def test_size_crops_the_centre_and_keeps_the_aspect(tmp_path):
    folder = tmp_path / "a"
    folder.mkdir()
    pixels = np.zeros((20, 60, 3), np.uint8)  # 60 wide, 20 high: left third black, middle white, right black
    pixels[:, 20:40] = 255
    Image.fromarray(pixels).save(folder / "0.png")
    data = load_dataset(f"imagefolder:{tmp_path}?size=10")
    assert data.x.shape == (1, 3, 10, 10)
    assert data.x.mean() > 0.9  # the centre square is the white part, undistorted


@pytest.mark.parametrize("bad", ["?size=0", "?size=big", "?width=3"])
def test_bad_options(tmp_path, bad):
    _mixed_folder(tmp_path)
    with pytest.raises(ValueError, match="imagefolder"):
        load_dataset(f"imagefolder:{tmp_path}{bad}", "test")


def test_a_recipe_runs_on_a_resized_folder(tmp_path):
    _mixed_folder(tmp_path / "data", per_class=8)
    options = RecipeOptions(
        dataset=f"imagefolder:{tmp_path / 'data'}?size=8", epochs=1, out=tmp_path / "run", progress=False
    )
    out = load_recipe("fgsm-sweep").run(options, eps="0,0.1")
    results = json.loads((out / "results.json").read_text())
    assert len(results["untargeted"]["accuracy"]) == 2 and results["options"]["dataset"].endswith("?size=8")
