"""ImageNet-size data, streamed from folders in the published layouts the tests write: ILSVRC2012's class
folders (official class index, RobustBench's Res256Crop224, its 5000-image list), OpenOOD v1.5's image lists,
ImageNet-C's folders, and `robustkit eval --dataset imagenet` end to end."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from robustkit.core.errors import DatasetNotFoundError
from robustkit.evaluate.benchmark import OOD_SETS, benchmark, default_eps, ood_sets, threat_model
from robustkit.evaluate.corruptions import corruption_accuracy
from robustkit.modelling import corruptions as gen
from robustkit.modelling import folders
from robustkit.modelling.batches import indexed_batches, labelled_batches
from robustkit.modelling.data import ImageFiles, load_dataset

# official indices 0, 1, 2 and 999 (the wnids sorted: n01440764 is the tench, n15075141 toilet tissue)
WNIDS = {"n01440764": 0, "n01443537": 1, "n01484850": 2, "n15075141": 999}
SIZES = [(300, 260), (250, 400), (180, 240), (224, 224), (512, 300), (260, 300), (301, 257), (400, 250)]


def _photo(w: int, h: int, seed: int) -> Image.Image:
    """A smooth colour image (gradients plus a little noise): JPEG keeps it close, the resize has work to do."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx / w, yy / h, (xx + yy) / (w + h)], axis=-1) * rng.uniform(80, 220, size=3)
    return Image.fromarray(np.clip(base + rng.normal(0, 6, size=base.shape), 0, 255).astype(np.uint8))


def write_imagenet(root, per_class=2, split="val"):
    """ROOT/imagenet/<split>/<wnid>/ILSVRC2012_val_<k>.JPEG, per_class images of each of WNIDS's classes."""
    k = 0
    for wnid in WNIDS:
        folder = root / "imagenet" / split / wnid
        folder.mkdir(parents=True)
        for _ in range(per_class):
            w, h = SIZES[k % len(SIZES)]
            _photo(w, h, k).save(folder / f"ILSVRC2012_val_{k:08d}.JPEG", quality=95)
            k += 1
    return root


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_imagenet(tmp_path_factory.mktemp("data"))


def test_class_folders_give_official_labels_sorted_files_and_res256crop224(root):
    data = load_dataset("imagenet", "test", root=root)
    assert isinstance(data, ImageFiles) and len(data) == 8 and data.info.num_classes == 1000
    assert data.info.shape == (3, 224, 224) and data.info.classes[999] == "n15075141"
    assert list(data.labels) == [0, 0, 1, 1, 2, 2, 999, 999]  # the official index, not the 4 folders' ranks
    assert data.relative[:2] == ("n01440764/ILSVRC2012_val_00000000.JPEG", "n01440764/ILSVRC2012_val_00000001.JPEG")
    from torchvision import transforms

    rb = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])
    for i in range(len(data)):
        x, y = data[i]
        with Image.open(root / "imagenet" / "val" / data.relative[i]) as image:
            want = rb(image.convert("RGB"))  # RobustBench's PREPROCESSINGS['Res256Crop224']
        assert x.dtype == torch.float32 and x.shape == (3, 224, 224) and torch.equal(x, want) and y == data.labels[i]
    # by hand with PIL for image 0 (300×260): shorter side 260 → 256, longer int(256·300/260) = 295, bilinear
    # (antialiased); centre crop top round(32/2) = 16, left round(71/2) = 36 (round half to even)
    with Image.open(root / "imagenet" / "val" / data.relative[0]) as image:
        small = image.convert("RGB").resize((295, 256), Image.Resampling.BILINEAR).crop((36, 16, 260, 240))
    assert torch.equal(data[0][0], torch.from_numpy(np.asarray(small).copy()).permute(2, 0, 1).float() / 255)


def test_robustbench_preprocessings_by_name_op_for_op(root, tmp_path):
    from torchvision import transforms

    bicubic = transforms.InterpolationMode("bicubic")
    copied = {  # robustbench.data.PREPROCESSINGS (robustbench 1.1.1), as its model zoo names them per model
        "BicubicRes256Crop224": [transforms.Resize(256, interpolation=bicubic), transforms.CenterCrop(224)],
        "Res224": [transforms.Resize([224, 224])],
        "Crop288": [transforms.CenterCrop(288)],
    }
    for name, ops in copied.items():
        data = load_dataset(f"imagenet:{name}", "test", root=root)
        side = 288 if name == "Crop288" else 224
        assert data.preprocessing == name and data.info.shape == (3, side, side) and list(data.labels)[-1] == 999
        for i in (0, 2):  # 300×260 and 180×240 (smaller than 288: CenterCrop pads, as there)
            with Image.open(root / "imagenet" / "val" / data.relative[i]) as image:
                want = transforms.Compose([*ops, transforms.ToTensor()])(image.convert("RGB"))
            assert torch.equal(data[i][0], want), (name, i)
    listing = tmp_path / "ids.txt"
    listing.write_text("n01484850/ILSVRC2012_val_00000004.JPEG\n")
    both = load_dataset(f"imagenet:{listing},Crop288", "test", root=root)
    assert both.relative == ("n01484850/ILSVRC2012_val_00000004.JPEG",) and both.info.shape == (3, 288, 288)
    with pytest.raises(ValueError, match="two image lists"):
        load_dataset(f"imagenet:{listing},{listing}", "test", root=root)
    with pytest.raises(ValueError, match="unknown preprocessing 'Res0Crop0'"):
        load_dataset("imagenet:Res0Crop0", "test", root=root)
    with pytest.raises(DatasetNotFoundError, match=r"image list Bicubic not found.*BicubicRes256Crop224"):
        load_dataset("imagenet:Bicubic", "test", root=root)


def test_robustbench_list_keeps_its_order_and_names_missing_files(root, tmp_path):
    listing = tmp_path / "imagenet_test_image_ids.txt"
    lines = ["n15075141/ILSVRC2012_val_00000007.JPEG", "n01440764/ILSVRC2012_val_00000001.JPEG",
             "n01484850/ILSVRC2012_val_00000004.JPEG"]  # fmt: skip
    listing.write_text("\n".join(lines))  # no newline at the end, as RobustBench's file
    data = load_dataset(f"imagenet:{listing}", "test", root=root)
    assert data.relative == tuple(lines) and list(data.labels) == [999, 0, 2] and data.info.name == f"imagenet:{listing}"
    whole = load_dataset("imagenet", "test", root=root)
    assert torch.equal(data[0][0], whole[7][0])
    assert len(load_dataset(f"imagenet:{listing}", "test", root=root, limit=2)) == 2
    listing.write_text("n01440764/ILSVRC2012_val_00099999.JPEG\n")
    with pytest.raises(DatasetNotFoundError, match=r"1 of the 1 images .*ILSVRC2012_val_00099999"):
        load_dataset(f"imagenet:{listing}", "test", root=root)
    listing.write_text("tench/x.JPEG\n")
    with pytest.raises(ValueError, match="does not start with an ImageNet class folder"):
        load_dataset(f"imagenet:{listing}", "test", root=root)
    # imagenet:robustbench reads the installed package's list (here: absent or naming images not on disk)
    with pytest.raises(DatasetNotFoundError, match="imagenet_test_image_ids"):
        load_dataset("imagenet:robustbench", "test", root=root)


def test_missing_or_misshapen_folders_are_named(tmp_path, root):
    with pytest.raises(DatasetNotFoundError, match=r"imagenet/val not found.*<wnid>/<file>\.JPEG"):
        load_dataset("imagenet", "test", root=tmp_path)
    with pytest.raises(DatasetNotFoundError, match=r"imagenet/train not found"):
        load_dataset("imagenet", "train", root=root)
    (tmp_path / "imagenet" / "val" / "cats").mkdir(parents=True)
    with pytest.raises(ValueError, match="not ImageNet classes \\(cats\\)"):
        load_dataset("imagenet", "test", root=tmp_path)


def test_streams_in_batches_and_shards_by_position(root, monkeypatch):
    data = load_dataset("imagenet", "test", root=root)
    reads = []
    original = folders.read_rgb
    monkeypatch.setattr(folders, "read_rgb", lambda path: reads.append(path) or original(path))
    sizes = [len(xb) for xb, _ in labelled_batches(data, batch_size=3)]
    assert sizes == [3, 3, 2] and len(reads) == 8  # one decode per image, three at a time
    whole = torch.stack([data[i][0] for i in range(8)])
    for rank in range(2):  # torchrun's split: rank r reads r, r + 2, ... and knows their global positions
        reads.clear()
        parts = list(indexed_batches(data, batch_size=3, rank=rank, world=2))
        index = torch.cat([ib for *_, ib in parts])
        assert index.tolist() == list(range(rank, 8, 2)) and len(reads) == 4
        assert torch.equal(torch.cat([xb for xb, _, _ in parts]), whole[rank::2])
        assert torch.cat([yb for _, yb, _ in parts]).tolist() == [int(v) for v in data.targets[rank::2]]
    picked = data.sample(3, seed=1)  # seeded, in data order, nothing read
    from robustkit.modelling.data import pick_indices

    assert picked.relative == tuple(data.relative[i] for i in pick_indices(8, 3, 1)) and len(reads) == 4
    assert picked.sample(3, seed=5) is picked and data.take(2).relative == data.relative[:2]


def _write_openood(root):
    """OpenOOD v1.5's layout: lists under benchmark_imglist/imagenet, NINCO under images_largescale, Textures under
    images_classic (5 and 3 images of several sizes)."""
    base = root / "openood"
    lists = base / "benchmark_imglist" / "imagenet"
    lists.mkdir(parents=True)
    rows = {"ninco": [], "textures": []}
    for name, folder, count in (("ninco", "images_largescale/ninco/NINCO_OOD_classes/fox", 5),
                                ("textures", "images_classic/texture/banded", 3)):  # fmt: skip
        (base / folder).mkdir(parents=True)
        for j in range(count):
            w, h = SIZES[(j + 3) % len(SIZES)]
            _photo(w, h, 100 + j).save(base / folder / f"{name}_{j}.jpg")
            rows[name].append(f"{folder.split('/', 1)[1]}/{name}_{j}.jpg -1")
        (lists / f"test_{name}.txt").write_text("\n".join(rows[name]) + "\n")
    return root


def test_openood_lists_are_read_from_their_folders(tmp_path):
    root = _write_openood(tmp_path)
    ninco = load_dataset("openood:ninco", "test", root=root)
    assert isinstance(ninco, ImageFiles) and len(ninco) == 5 and ninco.info.shape == (3, 224, 224)
    assert ninco.root == root / "openood" / "images_largescale" and ninco.relative[0] == "ninco/NINCO_OOD_classes/fox/ninco_0.jpg"
    textures = load_dataset("openood:textures", "test", root=root, sample=2, seed=0)
    assert textures.root == root / "openood" / "images_classic" and len(textures) == 2
    with Image.open(root / "openood" / "images_classic" / textures.relative[0]) as image:
        want = folders.preprocessing()(image.convert("RGB"))
    assert torch.equal(textures[0][0], want)
    assert load_dataset("openood:ninco", "test", root=root, size=32)[0][0].shape == (3, 32, 32)
    with pytest.raises(DatasetNotFoundError, match=r"test_ssb_hard\.txt not found"):
        load_dataset("openood:ssb_hard", "test", root=root)
    (root / "openood" / "benchmark_imglist" / "imagenet" / "test_ninco.txt").write_text("only/a/path.jpg\n")
    with pytest.raises(ValueError, match="not 'relative/path label'"):
        load_dataset("openood:ninco", "test", root=root)
    assert OOD_SETS["imagenet"] == {"near": ("openood:ssb_hard", "openood:ninco"),
                                    "far": ("openood:inaturalist", "openood:textures", "openood:openimage_o")}  # fmt: skip
    assert [(s.name, s.group) for s in ood_sets("imagenet:robustbench", ["openood:ninco", "far:fakedata"])] == [
        ("openood:ninco", "near"), ("fakedata", "far")]  # fmt: skip


class Tiny(nn.Module):
    """A 1000-class model for 224-pixel images whose class k's logit is −10·|mean grey level·255/20 − k| (the nearest
    k wins), through a linear head on 1012 features (the mean colour per quadrant, then the 1000 distances), so the
    feature detectors find it."""

    def __init__(self):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Linear(1012, 1000)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.weight[:, 12:] = torch.eye(1000)
            self.head.bias.zero_()

    def forward(self, x):
        level = x.mean(dim=(1, 2, 3)) * 255 / 20
        grey = -(level[:, None] - torch.arange(1000, dtype=x.dtype)[None]).abs() * 10
        return self.head(torch.cat([self.pool(x).flatten(1), grey], dim=1))


def tiny() -> nn.Module:
    return Tiny().eval()


def test_benchmark_on_imagenet_defaults_to_4_255_openood_sets_and_notes_the_missing(tmp_path):
    root = _write_openood(write_imagenet(tmp_path))
    assert default_eps("linf", "imagenet") == 4 / 255 == threat_model(dataset="imagenet:robustbench").eps
    assert default_eps("linf", "cifar10") == 8 / 255 and threat_model("fgsm", dataset="imagenet").eps == 4 / 255
    assert default_eps("l2", "imagenet") == 0.5  # RobustBench has no ImageNet L2 track
    bench = benchmark(tiny(), "imagenet", root=root, attack="fgsm", check_sample=4, detectors=None)
    assert bench.n == 8 and bench.num_classes == 1000 and bench.attack["eps"] == 4 / 255
    assert {(r["name"], r["group"]) for r in bench.ood_sets} == {("openood:ninco", "near"), ("openood:textures", "far")}
    assert {"openood:ssb_hard", "openood:inaturalist", "openood:openimage_o"} <= set(bench.skipped)
    fitted = {"mahalanobis", "rmd", "vim", "react", "ash"}  # fit on the ID training split, which is not there
    assert fitted <= set(bench.skipped) and "imagenet/train" in bench.skipped["vim"] and not fitted & set(bench.detectors)
    assert bench.detectors == ["max_softmax", "max_logit", "energy", "gen"] and bench.images_per_second > 0
    with pytest.raises(DatasetNotFoundError, match="detectors mahalanobis fit on imagenet's training split"):
        benchmark(tiny(), "imagenet", root=root, attack="fgsm", detectors=["mahalanobis"])
    # with a training folder (here: one image of each of 4 classes) the fitted detectors run on it
    write_imagenet(root, per_class=1, split="train")
    fit = benchmark(tiny(), "imagenet", root=root, attack="fgsm", check_sample=4, detectors=["react", "vim", "energy"],
                    ood=["far:openood:textures"], limit=4)  # fmt: skip
    assert fit.detectors == ["react", "vim", "energy"] and fit.n == 4 and fit.ood_sets[0]["n"] == 3
    # the OOD images are preprocessed as the ID ones (OpenOOD applies the model's preprocessor to both)
    crop = benchmark(tiny(), "imagenet:Crop288", root=root, attack="fgsm", check_sample=2, detectors=["energy"],
                     ood=["far:openood:textures"], limit=2)  # fmt: skip
    assert crop.ood_sets[0]["n"] == 2 and len(crop.ood) == 1  # a seeded --limit of the list, at 288×288
    # Mahalanobis keeps one mean per class: a partial training folder is named as such, in one short line
    from robustkit.registry import detector

    with pytest.raises(ValueError, match=r"1000 classes in the fit data; classes \[3, 4, .*, 12, … \(996 in all\)\]"):
        detector("mahalanobis").fit(tiny(), load_dataset("imagenet", "train", root=root))


def test_fakedata_streams_beside_a_streamed_id_set_in_batches_of_batch_size(root):
    model, seen = tiny(), []
    model.register_forward_hook(lambda _m, args, _out: seen.append(len(args[0])))
    bench = benchmark(model, "imagenet", root=root, attack="fgsm", check_sample=2, detectors=["energy"], ood=["fakedata"],
                      batch_size=3)  # fmt: skip
    assert bench.ood_sets == [{"name": "fakedata", "group": "far", "default": False, "n": 8}]
    assert max(seen) == 3 and bench.options["batch_size"] == 3  # every pass, checks included, in batches of 3 at most
    with pytest.raises(ValueError, match="batch_size=0 must be a positive number"):
        benchmark(model, "imagenet", root=root, batch_size=0)
    streamed = load_dataset("fakedata", shape=(3, 224, 224), size=3, seed=0, stream=True)
    held = load_dataset("fakedata", shape=(3, 224, 224), size=3, seed=0)
    assert torch.equal(torch.stack([streamed[i][0] for i in range(3)]), held.x)


def _write_imagenet_c(root, data, corruptions, level):
    """ROOT/ImageNet-C/<corruption>/<severity>/<wnid>/<file>.JPEG: uniform grey 224×224 images, at the grey level
    level(label, severity)·20 (JPEG keeps a uniform image exact)."""
    for c in corruptions:
        for s in range(1, 6):
            for rel, label in zip(data.relative, data.labels, strict=True):
                path = root / "ImageNet-C" / c / str(s) / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((224, 224, 3), level(label, s) * 20, np.uint8)).save(path, quality=85)
    return root / "ImageNet-C"


def test_official_imagenet_c_folders_are_read_by_file_name(tmp_path):
    root = write_imagenet(tmp_path)
    data = load_dataset("imagenet", "test", root=root).select([0, 1, 2, 3, 4, 5])  # labels 0, 0, 1, 1, 2, 2
    folder = _write_imagenet_c(root, data, ["fog", "contrast"], lambda k, s: k if s % 2 else (k + 1) % 3)
    assert gen.official_folder("imagenet:robustbench", root) == folder and gen.official_folder("imagenet", tmp_path / "x") is None
    result = corruption_accuracy(tiny(), data, corruptions=["fog", "contrast"], files=folder, batch_size=4)
    assert "official files" in result.source and result.images == 6
    assert result.accuracy["fog"] == {1: 1.0, 2: 0.0, 3: 1.0, 4: 0.0, 5: 1.0}  # the files' grey levels, not generated
    read = gen.ImageNetCFiles(folder, ["fog"], data.relative).read("fog", 2, torch.tensor([5, 0]))
    assert read.shape == (2, 3, 224, 224) and torch.equal(read[0], torch.zeros(3, 224, 224)) and torch.allclose(read[1], torch.full((3, 224, 224), 20 / 255))
    with pytest.raises(FileNotFoundError, match=r"snow.*weather\.tar"):
        corruption_accuracy(tiny(), data, corruptions=["snow"], files=folder)
    with pytest.raises(ValueError, match=r"pass the data as load_dataset\(.imagenet."):
        corruption_accuracy(tiny(), torch.zeros(2, 3, 224, 224), torch.zeros(2, dtype=torch.long), corruptions=["fog"], files=folder)


def test_imagenet_data_is_corrupted_with_imagenet_c_constants(root):
    data = load_dataset("imagenet", "test", root=root, limit=2)
    result = corruption_accuracy(tiny(), data, corruptions=["contrast"], severities=[5])
    assert "make_imagenet_c.py" in result.source and "ImageNet-C severity constants" in result.source and "JPEG quality 85" in result.source
    x = torch.stack([data[i][0] for i in range(2)])
    ours = gen.corrupt(x, "contrast", 5, [0, 1], constants="imagenet-c")
    pixels = (x * 255).round().double() / 255
    means = pixels.mean(dim=(2, 3), keepdim=True)
    want = torch.floor(((pixels - means) * 0.05 + means).clamp(0, 1) * 255)  # contrast 0.05, before the JPEG file
    assert float((ours * 255 - want).abs().mean()) < 1.5 and not torch.equal(ours, gen.corrupt(x, "contrast", 5, [0, 1]))


def test_eval_cli_on_imagenet_streams_and_reports_speed(root, tmp_path, monkeypatch, capsys):
    from robustkit.app.cli import main

    monkeypatch.chdir(tmp_path)
    main(["eval", "--model", f"{__file__}:tiny", "--dataset", "imagenet", "--root", str(root), "--attack", "fgsm",
          "--limit", "6", "--detector", "energy", "--ood", "far:fakedata", "--device", "cpu", "--no-progress",
          "--batch-size", "4", "--out", "run"])  # fmt: skip
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    report = (tmp_path / "run" / "report.md").read_text()
    assert results["n"] == 6 and results["attack"]["eps"] == 4 / 255 and results["num_classes"] == 1000
    assert results["options"]["batch_size"] == 4
    assert results["images_per_second"] > 0 and "images per second" in report and "ε = 4/255" in report
    assert "RobustBench's ImageNet leaderboard runs the official AutoAttack (standard) at ε = 4/255" in report
    assert "images/s)" in capsys.readouterr().out


def test_commands_that_hold_images_take_a_limited_imagenet_or_say_why_not(root, monkeypatch, tmp_path, capsys):
    from robustkit.app.cli import main
    from robustkit.modelling import data as data_module
    from robustkit.modelling.data import in_memory

    held = in_memory(load_dataset("imagenet", "test", root=root, limit=3), "robustkit certify")
    assert held.x.shape == (3, 3, 224, 224) and held.y.tolist() == [0, 0, 1] and held.info.num_classes == 1000
    monkeypatch.setattr(data_module, "IN_MEMORY_LIMIT", 4 * 3 * 224 * 224 * 4)  # room for 4 images
    with pytest.raises(ValueError, match=r"robustkit certify holds its images in memory, and 8 imagenet images take 0\.0 GB"):
        in_memory(load_dataset("imagenet", "test", root=root), "robustkit certify")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:  # the CLI: one line, exit 2, no traceback
        main(["attack", "--model", f"{__file__}:tiny", "--dataset", "imagenet", "--root", str(root), "--attack", "fgsm",
              "--limit", "8", "--device", "cpu", "--no-progress", "--out", "run"])  # fmt: skip
    assert exit_.value.code == 2 and "error: robustkit attack holds its images in memory" in capsys.readouterr().err


def bicubic_tiny():
    """``tiny`` as a named model made for RobustBench's BicubicRes256Crop224 (its ``robustkit_input``)."""
    from robustkit.modelling.zoo import ROBUSTBENCH_PREPROCESSING, InputSpec, _spec_from_steps

    spec = _spec_from_steps(ROBUSTBENCH_PREPROCESSING["BicubicRes256Crop224"], (3, 224, 224), "RobustBench's zoo")
    model = tiny()
    model.robustkit_input = spec
    assert isinstance(spec, InputSpec)
    return model


def test_a_named_models_preprocessing_chooses_the_imagenet_images_it_gets(root, tmp_path, monkeypatch):
    """RobustBench evaluates each ImageNet model with its own preprocessing: `--dataset imagenet` follows the
    model's, unless the name gives one."""
    from robustkit.app.cli import main
    from robustkit.modelling.zoo import InputSpec

    bicubic = InputSpec((3, 224, 224), 256, 224, "bicubic", "RobustBench's zoo")
    assert bicubic.dataset("imagenet") == "imagenet:BicubicRes256Crop224"
    assert bicubic.dataset("imagenet:robustbench") == "imagenet:robustbench,BicubicRes256Crop224"
    assert bicubic.dataset("imagenet:Crop288") == "imagenet:Crop288" and bicubic.dataset("cifar10") == "cifar10"
    assert InputSpec((3, 224, 224), 256, 224, "bilinear").dataset("imagenet") == "imagenet"  # the default already
    assert InputSpec((3, 224, 224), 235, 224, "bicubic").dataset("imagenet") == "imagenet:BicubicRes235Crop224"  # timm's
    with pytest.raises(ValueError, match="no ImageNet preprocessing of robustkit's repeats"):
        InputSpec((3, 224, 224), 256, 224, "nearest").dataset("imagenet")
    monkeypatch.chdir(tmp_path)
    main(["eval", "--model", f"{__file__}:bicubic_tiny", "--dataset", "imagenet", "--root", str(root), "--attack",
          "fgsm", "--limit", "2", "--detector", "energy", "--ood", "far:fakedata", "--device", "cpu", "--no-progress",
          "--batch-size", "2", "--out", "run"])  # fmt: skip
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["dataset"] == "imagenet:BicubicRes256Crop224"
    x = load_dataset("imagenet:BicubicRes256Crop224", "test", root=root, limit=1)[0][0]
    assert not torch.equal(x, load_dataset("imagenet", "test", root=root, limit=1)[0][0])  # bicubic, not bilinear
