"""Common corruptions (Hendrycks & Dietterich 2019): CIFAR-10-C's constants, per-image seeding,
skips on small images, the official files' reader, and CE / mCE / relative mCE by hand."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from robustkit.evaluate.corruptions import CorruptionResult, corruption_accuracy
from robustkit.modelling import corruptions as gen
from robustkit.modelling.batches import indexed_batches

# make_cifar_c.py (hendrycks/robustness, ImageNet-C/create_c), copied by hand from the published script
PUBLISHED = {
    "gaussian_noise": [0.04, 0.06, 0.08, 0.09, 0.10],
    "shot_noise": [500, 250, 100, 75, 50],
    "impulse_noise": [0.01, 0.02, 0.03, 0.05, 0.07],
    "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
    "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
    "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
    "zoom_blur": [np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
                  np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)],
    "snow": [(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
             (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)],
    "frost": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
    "fog": [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
    "brightness": [0.05, 0.1, 0.15, 0.2, 0.3],
    "contrast": [0.75, 0.5, 0.4, 0.3, 0.15],
    "elastic_transform": [(32 * 0, 32 * 0, 32 * 0.08), (32 * 0.05, 32 * 0.2, 32 * 0.07), (32 * 0.08, 32 * 0.06, 32 * 0.06),
                          (32 * 0.1, 32 * 0.04, 32 * 0.05), (32 * 0.1, 32 * 0.03, 32 * 0.03)],
    "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
    "jpeg_compression": [80, 65, 58, 50, 40],
}  # fmt: skip
# make_imagenet_c.py (same folder), copied by hand from the published script
PUBLISHED_IMAGENET = {
    "gaussian_noise": [.08, .12, 0.18, 0.26, 0.38],
    "shot_noise": [60, 25, 12, 5, 3],
    "impulse_noise": [.03, .06, .09, 0.17, 0.27],
    "defocus_blur": [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)],
    "glass_blur": [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)],
    "motion_blur": [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)],
    "zoom_blur": [np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
                  np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03)],
    "snow": [(0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
             (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)],
    "frost": [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)],
    "fog": [(1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)],
    "brightness": [.1, .2, .3, .4, .5],
    "contrast": [0.4, .3, .2, .1, .05],
    "elastic_transform": [(244 * 2, 244 * 0.7, 244 * 0.1), (244 * 2, 244 * 0.08, 244 * 0.2),
                          (244 * 0.05, 244 * 0.01, 244 * 0.02), (244 * 0.07, 244 * 0.01, 244 * 0.02),
                          (244 * 0.12, 244 * 0.01, 244 * 0.02)],
    "pixelate": [0.6, 0.5, 0.4, 0.3, 0.25],
    "jpeg_compression": [25, 18, 15, 10, 7],
}  # fmt: skip


@pytest.mark.parametrize("table, published", [("cifar10-c", PUBLISHED), ("imagenet-c", PUBLISHED_IMAGENET)])
def test_constants_are_the_published_ones(table, published):
    ours_table = gen.SETS[table].constants
    assert set(ours_table) == set(published) == set(gen.CORRUPTIONS) and len(gen.CORRUPTIONS) == 15
    for name, rows in published.items():
        for severity, want in enumerate(rows):
            got = ours_table[name][severity]
            if name == "zoom_blur":
                got = np.arange(*got)
            # exact: the elastic values are the scripts' own products (244 * 0.7 as there, not 170.8)
            assert np.array_equal(np.asarray(got, float), np.asarray(want, float)), f"{table} {name} {severity + 1}"
    assert gen.SETS["cifar10-c"].side == 32 and gen.SETS["imagenet-c"].side == 224
    assert gen.SETS["imagenet-c"].jpeg_quality == 85 and gen.SETS["cifar10-c"].jpeg_quality is None


def test_frost_texture_sizes_and_where_frost_is_skipped():
    assert tuple(gen._frost_texture(i, 1.0).shape[:2] for i in range(5)) == gen.FROST_SIZES
    assert gen._frost_texture(1, 0.2).shape[:2] == (63, 112)  # cv2.resize by 0.2, as make_cifar_c.py
    assert "frost" not in gen.skipped_corruptions((3, 224, 224), "imagenet-c")
    assert "does not fit" in gen.skipped_corruptions((3, 315, 315), "imagenet-c")["frost"]
    assert "frost" not in gen.skipped_corruptions((3, 62, 62)) and "frost" in gen.skipped_corruptions((3, 64, 64))
    with pytest.raises(ValueError, match="unknown corruption constants 'imagenet'; valid: cifar10-c, imagenet-c"):
        gen.corrupt(torch.zeros(1, 3, 32, 32), "fog", 1, [0], constants="imagenet")


def test_motion_blur_rounds_as_imagemagick_q16_through_an_8bit_png():
    # radius 1, sigma 1, angle 0: taps (0,0), (1,0), (2,0) with weights e^0, e^-1/2, e^-2 over their sum
    # 1 + 0.6065307 + 0.1353353 = 1.7418659: 0.5740970, 0.3482074, 0.0776956; the row's end repeats.
    row = np.array([[100, 102, 101]], np.uint8)
    # pixel 0: 0.5740970·100 + 0.3482074·102 + 0.0776956·101 = 100.7741; ImageMagick: 257·100.7741 = 25898.95,
    # quantum ⌊25898.95 + ½⌋ = 25899, PNG byte ⌊255·25899 / 65535⌋ = 100 (the nearest integer, 101, was robustkit's)
    # pixel 1: 0.5740970·102 + (0.3482074 + 0.0776956)·101 = 101.5741 → 26104.55 → 26105 → 101 (not 102)
    assert gen.imagemagick_8bit(row, 1, 1, 0.0).tolist() == [[100.0, 101.0, 101.0]]
    # radius 2, sigma 0.5: weights e^(-2·i²) over their sum: 0.8805369, 0.1191677, 0.0002954, ...
    # pixel 0 of [200, 200, 199, 200, 200]: 200 − 0.0002954 = 199.9997046 → 257· = 51399.924 → quantum 51400
    # = 257·200 → 200: the 16-bit rounding comes first, so a plain floor of the blurred value (199) is wrong too
    # pixel 1: 200 − 0.1191677 = 199.8808 → 51369.4 → 51369 → ⌊199.88⌋ = 199
    line = np.array([[200, 200, 199, 200, 200]], np.uint8)
    assert gen.imagemagick_8bit(line, 2, 0.5, 0.0).tolist() == [[200.0, 199.0, 199.0, 200.0, 200.0]]
    flat = np.full((5, 6, 3), 77, np.uint8)  # a constant image stays itself, edges included
    assert np.array_equal(gen.imagemagick_8bit(flat, 9, 2.5, 30.0), flat)
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32))).float() / 255
    out = gen.corrupt(x, "motion_blur", 3, [0, 1])  # whole 8-bit levels, as the PNG holds
    assert float((out * 255 - (out * 255).round()).abs().max()) < 1e-4 and not torch.equal(out, x)


@pytest.mark.parametrize("severity", [1, 5])
def test_gaussian_noise_has_the_published_scale(severity):
    # a mid-grey CIFAR-size image: the noise's std in pixel units is the constant times 255
    x = torch.full((4, 3, 32, 32), 128 / 255)
    out = gen.corrupt(x, "gaussian_noise", severity, range(4))
    std = float((out - x).std()) * 255
    want = PUBLISHED["gaussian_noise"][severity - 1] * 255
    assert abs(std - want) < 0.05 * want, (std, want)


def test_contrast_and_brightness_follow_the_formulas():
    rng = np.random.default_rng(0)
    pixels = rng.integers(40, 200, size=(2, 3, 32, 32)).astype(np.float32)
    x = torch.from_numpy(pixels / 255)
    out = gen.corrupt(x, "contrast", 5, [0, 1]).numpy() * 255
    means = pixels.mean(axis=(2, 3), keepdims=True) / 255
    want = np.floor(np.clip((pixels / 255 - means) * 0.15 + means, 0, 1) * 255)  # np.uint8 truncates, as there
    assert np.abs(out - want).max() <= 1.0
    grey = torch.full((1, 3, 32, 32), 100 / 255)
    brighter = gen.corrupt(grey, "brightness", 3, [0]) * 255  # HSV value + 0.15
    assert abs(float(brighter.mean()) - (100 + 0.15 * 255)) <= 1.0


def test_motion_kernel_is_imagemagicks_one_sided_gaussian_line():
    taps = gen.motion_kernel(6, 1, 0.0)
    assert len(taps) == 13  # 2·radius + 1
    assert [(dx, dy) for dx, dy, _ in taps[:3]] == [(0, 0), (1, 0), (2, 0)]  # one-sided, along the angle
    weights = np.array([w for _, _, w in taps])
    assert weights.sum() == pytest.approx(1.0) and weights[0] == weights.max()
    assert weights[1] / weights[0] == pytest.approx(math.exp(-0.5))  # Gaussian of sigma 1 in the tap index
    assert [(dx, dy) for dx, dy, _ in gen.motion_kernel(6, 1, 90.0)[:3]] == [(0, 0), (0, 1), (0, 2)]


def test_same_images_for_any_batch_size_and_any_split_over_ranks(digits_test):
    x = digits_test.x[:40]
    idx = torch.arange(40)
    for name in ("glass_blur", "snow", "impulse_noise", "elastic_transform"):
        whole = gen.corrupt(x, name, 3, idx, seed=5)
        batched = torch.cat([gen.corrupt(x[s : s + 7], name, 3, idx[s : s + 7], seed=5) for s in range(0, 40, 7)])
        assert torch.equal(whole, batched), name
        for rank in range(2):  # torchrun's split: rank r takes r, r + 2, ... with their global indices
            part = [(xb, ib) for xb, _, ib in indexed_batches(x, digits_test.y[:40], 9, rank=rank, world=2)]
            shard = torch.cat([gen.corrupt(xb, name, 3, ib, seed=5) for xb, ib in part])
            assert torch.equal(shard, whole[rank::2]), name
        assert not torch.equal(gen.corrupt(x, name, 3, idx, seed=6), whole)  # the seed matters
        assert not torch.equal(whole[0], gen.corrupt(x[:1], name, 3, [1], seed=5)[0])  # ... and so does the index


def test_accuracies_identical_for_batch_sizes_7_and_64(model, digits_test):
    data = digits_test.take(32)
    kwargs = {"corruptions": ["gaussian_noise", "glass_blur", "fog", "frost"], "severities": [2, 5], "seed": 3}
    a = corruption_accuracy(model, data, batch_size=7, **kwargs)
    b = corruption_accuracy(model, data, batch_size=64, **kwargs)
    assert a.accuracy == b.accuracy and a.clean_accuracy == b.clean_accuracy and a.images == b.images == 32
    assert set(a.accuracy) == {"gaussian_noise", "glass_blur", "fog"} and "frost" in a.skipped  # 8×8: no frost
    assert "32" in a.skipped["frost"] and "make_cifar_c.py" in a.source and "corrupt-tta" in a.source
    assert a.accuracy["glass_blur"][5] < a.clean_accuracy - 0.2  # glass blur wrecks 8×8 digits
    assert a.mce is None and a.reference is None


def test_every_corruption_but_frost_applies_to_grey_digits(digits_test):
    x = digits_test.x[:6]
    assert set(gen.skipped_corruptions(x.shape[1:])) == {"frost"}
    for name in gen.CORRUPTIONS:
        if name == "frost":
            with pytest.raises(ValueError, match="frost does not apply"):
                gen.corrupt(x, name, 1, range(6))
            continue
        out = gen.corrupt(x, name, 5, range(6))
        assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
        assert float((out - x).abs().mean()) > 0.005, name  # severity 5 changes the images
    rgb = torch.rand(2, 3, 32, 32)
    assert gen.skipped_corruptions(rgb.shape[1:]) == {}
    assert gen.corrupt(rgb, "frost", 5, [0, 1]).shape == rgb.shape
    assert set(gen.skipped_corruptions((4, 32, 32))) == set(gen.CORRUPTIONS)


def test_bad_names_and_severities_are_refused(model, digits_test):
    with pytest.raises(ValueError, match="unknown corruption"):
        corruption_accuracy(model, digits_test.take(4), corruptions=["fogg"])
    with pytest.raises(ValueError, match="severities"):
        corruption_accuracy(model, digits_test.take(4), severities=[0, 6])
    with pytest.raises(TypeError, match="reference must be"):
        corruption_accuracy(model, digits_test.take(4), reference="alexnet")


def _result(accuracy, clean, reference=None, n=100):
    return CorruptionResult({c: dict(enumerate(row, start=1)) for c, row in accuracy.items()}, clean, n, "test", 0,
                            reference=reference)  # fmt: skip


def test_mce_and_relative_mce_by_hand():
    ref = _result({"fog": [0.8, 0.6], "contrast": [0.9, 0.7]}, clean=0.95)
    ours = _result({"fog": [0.85, 0.75], "contrast": [0.8, 0.5]}, clean=0.9, reference=ref)
    # CE_fog = (0.15 + 0.25) / (0.2 + 0.4) = 2/3; CE_contrast = (0.2 + 0.5) / (0.1 + 0.3) = 7/4
    assert ours.ce["fog"] == pytest.approx(2 / 3) and ours.ce["contrast"] == pytest.approx(7 / 4)
    assert ours.mce == pytest.approx((2 / 3 + 7 / 4) / 2)
    # relative: fog (0.05 + 0.15) / (0.15 + 0.35) = 0.4; contrast (0.1 + 0.4) / (0.05 + 0.25) = 5/3
    assert ours.relative_ce["fog"] == pytest.approx(0.4) and ours.relative_ce["contrast"] == pytest.approx(5 / 3)
    assert ours.relative_mce == pytest.approx((0.4 + 5 / 3) / 2)
    assert ours.corruption_accuracy == pytest.approx({"fog": 0.8, "contrast": 0.65})
    assert ours.mean_accuracy == pytest.approx(0.725)
    assert ours.undefined == {"ce": [], "relative_ce": []}
    # a reference that loses nothing to a corruption leaves relative CE undefined there (not a huge ratio)
    flat = _result({"fog": [0.95, 0.95], "contrast": [0.9, 0.7]}, clean=0.95)
    other = _result({"fog": [0.85, 0.75], "contrast": [0.8, 0.5]}, clean=0.9, reference=flat)
    assert math.isnan(other.relative_ce["fog"]) and other.undefined["relative_ce"] == ["fog"]
    assert other.relative_mce == pytest.approx(5 / 3)


def test_reference_model_is_evaluated_on_the_same_images(model, digits_test):
    data = digits_test.take(30)
    kwargs = {"corruptions": ["contrast", "zoom_blur"], "severities": [5]}
    own = corruption_accuracy(model, data, **kwargs, reference=model)
    assert own.reference is not None and own.reference.accuracy == own.accuracy
    assert own.ce == {"contrast": 1.0, "zoom_blur": 1.0} or any(math.isnan(v) for v in own.ce.values())
    assert own.mce == pytest.approx(1.0)
    again = corruption_accuracy(model, data, **kwargs, reference=own.reference)
    assert again.mce == own.mce
    with pytest.raises(ValueError, match="reference result counts"):
        corruption_accuracy(model, digits_test.take(20), **kwargs, reference=own.reference)


class _Brightness(nn.Module):
    """Predicts the class k whose grey level k·20/255 is nearest the image's mean."""

    def forward(self, x):
        level = x.mean(dim=(1, 2, 3)) * 255 / 20
        return -(level[:, None] - torch.arange(10, dtype=x.dtype)[None]).abs()


def _official(folder, labels, size=8):
    """Files in the official layout: severity s, image i filled with its label's grey level when s is odd,
    with the next class's when s is even."""
    n = len(labels)
    rows = []
    for s in range(1, 6):
        for i in range(n):
            k = labels[i] if s % 2 else (labels[i] + 1) % 10
            rows.append(np.full((size, size, 3), k * 20, np.uint8))
    folder.mkdir()
    for name in ("fog", "contrast"):
        np.save(folder / f"{name}.npy", np.stack(rows))
    np.save(folder / "labels.npy", np.tile(np.asarray(labels, np.uint8), 5))
    return folder


def test_official_files_are_read_at_the_images_positions(tmp_path):
    labels = [3, 1, 4, 1, 5, 9]
    folder = _official(tmp_path / "CIFAR-10-C", labels)
    x = torch.stack([torch.full((3, 8, 8), k * 20 / 255) for k in labels])
    y = torch.tensor(labels)
    result = corruption_accuracy(_Brightness(), x[:4], y[:4], corruptions=["fog", "contrast"], files=folder, batch_size=3)
    assert result.clean_accuracy == 1.0 and result.images == 4 and "official files" in result.source
    assert result.accuracy["fog"] == {1: 1.0, 2: 0.0, 3: 1.0, 4: 0.0, 5: 1.0}
    assert gen.official_folder("cifar10", tmp_path) == folder and gen.official_folder("cifar100", tmp_path) is None
    with pytest.raises(ValueError, match="labels differ"):  # shuffled data is not the published order
        corruption_accuracy(_Brightness(), x[[1, 0]], y[[1, 0]], corruptions=["fog"], files=folder)
    with pytest.raises(FileNotFoundError, match=r"snow\.npy not found"):
        corruption_accuracy(_Brightness(), x, y, corruptions=["snow"], files=folder)
    with pytest.raises(ValueError, match="past the 6 test images"):
        corruption_accuracy(_Brightness(), torch.cat([x, x[:1]]), torch.cat([y, y[:1]]), corruptions=["fog"], files=folder)


class _NearestMean(nn.Module):
    """Logits −‖x − mean_k‖² with the digits training means: a cheap model that has learned something."""

    def __init__(self):
        super().__init__()
        from robustkit.modelling.data import load_dataset

        train = load_dataset("digits", "train")
        self.register_buffer("means", torch.stack([train.x[train.y == k].mean(0) for k in range(10)]))

    def forward(self, x):
        return -((x[:, None] - self.means[None]) ** 2).sum(dim=(2, 3, 4))


def nearest_mean() -> nn.Module:
    return _NearestMean()


def test_eval_corruptions_adds_the_table_and_the_heatmap(tmp_path, monkeypatch):
    import json

    from robustkit.app.cli import main

    monkeypatch.chdir(tmp_path)
    main(["eval", "--model", f"{__file__}:nearest_mean", "--dataset", "digits", "--attack", "fgsm", "--eps", "0.1",
          "--limit", "24", "--detector", "energy", "--device", "cpu", "--no-progress", "--corruptions", "--out", "run"])  # fmt: skip
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    report = (tmp_path / "run" / "report.md").read_text()
    corrupted = results["corruptions"]
    assert corrupted["images"] == results["n"] == 24 and corrupted["clean_accuracy"] == results["clean_accuracy"]
    assert len(corrupted["accuracy"]) == 14 and set(corrupted["skipped"]) == {"frost"}
    assert "corruptions.png" in results["run"]["figures"] and "](corruptions.png)" in report
    assert "## Common corruptions (24 images)" in report and "| glass_blur |" in report and "`frost` skipped" in report
    row = corrupted["accuracy"]["fog"]
    assert f"| fog | {' | '.join(f'{row[str(s)]:.3f}' for s in range(1, 6))} |" in report
