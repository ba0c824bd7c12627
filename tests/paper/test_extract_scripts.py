"""ImageNet extraction scripts, end to end on fake official archives (no network, no SciPy).

The fake devkit's ``meta.mat`` is written by a small MAT level-5 writer below that stores values
the way MATLAB does (integral doubles compacted to miUINT8/miUINT16, chars as UTF-16), in either
byte order, optionally zlib-compressed. When SciPy happens to be installed, a file written by
``scipy.io.savemat`` is parsed too.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import os
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

from balf_paper.data import imagenet_folder
from balf_paper.data.extraction import MANIFEST_NAME
from balf_paper.data.imagenet_archives import parse_meta_mat

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts" / "imagenet"

# (ILSVRC id, WordNet id, num_children): three leaf classes and one inner synset of the hierarchy.
SYNSETS = [
    (1, "n02119789", 0),
    (2, "n02100735", 0),
    (3, "n01440764", 0),
    (1001, "n00001740", 3),
]
LEAVES = {ilsvrc_id: wnid for ilsvrc_id, wnid, children in SYNSETS if children == 0}
GROUND_TRUTH = [3, 1, 1, 2, 3, 3, 2, 1, 1, 3]  # ILSVRC id of val image 1, 2, ... 10
FIELDS = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children"]


# --- a minimal MATLAB level-5 writer -----------------------------------------------------------


def _element(mtype: int, payload: bytes, endian: str) -> bytes:
    if 0 < len(payload) <= 4:  # small data element format
        head = (mtype, len(payload)) if endian == "<" else (len(payload), mtype)
        return struct.pack(endian + "HH", *head) + payload.ljust(4, b"\0")
    return struct.pack(endian + "II", mtype, len(payload)) + payload + b"\0" * (-len(payload) % 8)


def _matrix(name: str, mx_class: int, dims: tuple[int, ...], body: bytes, endian: str) -> bytes:
    header = _element(6, struct.pack(endian + "II", mx_class, 0), endian)
    header += _element(5, np.array(dims, endian + "i4").tobytes(), endian)
    header += _element(1, name.encode(), endian)
    return _element(14, header + body, endian)


def _double(values: list[float], endian: str) -> bytes:
    array = np.asarray(values, dtype=float)
    if array.size and np.all(array == np.round(array)) and array.min() >= 0 and array.max() < 256:
        data = _element(2, array.astype("u1").tobytes(), endian)  # compacted like MATLAB does
    else:
        data = _element(9, array.astype(endian + "f8").tobytes(), endian)
    return _matrix("", 6, (1, array.size), data, endian)


def _char(text: str, endian: str) -> bytes:
    codec = "utf-16-le" if endian == "<" else "utf-16-be"
    return _matrix("", 4, (1, len(text)), _element(4, text.encode(codec), endian), endian)


def write_meta_mat(endian: str = "<", compress: bool = False) -> bytes:
    """A devkit-like meta.mat: ``synsets``, a (len(SYNSETS), 1) struct array."""
    body = _element(5, struct.pack(endian + "i", 32), endian)
    body += _element(1, b"".join(f.encode().ljust(32, b"\0") for f in FIELDS), endian)
    for ilsvrc_id, wnid, children in SYNSETS:
        body += _double([ilsvrc_id], endian) + _char(wnid, endian)
        body += _char(f"words of {wnid}", endian) + _char("a gloss", endian)
        body += _double([children], endian) + _double(list(range(1, children + 1)), endian)
    variable = _matrix("synsets", 2, (len(SYNSETS), 1), body, endian)
    if compress:
        packed = zlib.compress(variable)
        variable = struct.pack(endian + "II", 15, len(packed)) + packed
    text = b"MATLAB 5.0 MAT-file, written by the balf tests".ljust(116, b" ")
    indicator = b"IM" if endian == "<" else b"MI"
    return text + b"\0" * 8 + struct.pack(endian + "H", 0x0100) + indicator + variable


@pytest.mark.parametrize(
    ("endian", "compress"),
    [("<", False), ("<", True), (">", False)],
    ids=["little-endian", "compressed", "big-endian"],
)
def test_meta_mat_maps_leaf_ids_to_wnids(endian, compress):
    assert parse_meta_mat(write_meta_mat(endian, compress)) == LEAVES


def test_meta_mat_written_by_scipy_is_parsed():
    sio = pytest.importorskip("scipy.io")
    synsets = np.zeros((len(SYNSETS), 1), dtype=[(f, "O") for f in FIELDS])
    for row, (ilsvrc_id, wnid, children) in enumerate(SYNSETS):
        values = (float(ilsvrc_id), wnid, "words", "gloss", float(children), np.zeros((1, 0)))
        for field, value in zip(FIELDS, values, strict=True):
            synsets[row, 0][field] = value
    buffer = io.BytesIO()
    sio.savemat(buffer, {"synsets": synsets}, do_compression=True)
    assert parse_meta_mat(buffer.getvalue()) == LEAVES


# --- fake archives -----------------------------------------------------------------------------


def _jpeg(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (value, 255 - value, 7)).save(buffer, "JPEG")
    return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _tar_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            _add(tar, name, data)
    return buffer.getvalue()


@pytest.fixture
def val_archives(tmp_path: Path) -> tuple[Path, Path, dict[str, bytes]]:
    """(val tar, devkit tar.gz, {file name: JPEG bytes}) like the official downloads."""
    devkit = tmp_path / "ILSVRC2012_devkit_t12.tar.gz"
    with tarfile.open(devkit, "w:gz") as tar:
        truth = "".join(f"{i}\n" for i in GROUND_TRUTH).encode()
        _add(tar, "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt", truth)
        _add(tar, "ILSVRC2012_devkit_t12/data/meta.mat", write_meta_mat(compress=True))
    images = {f"ILSVRC2012_val_{i:08d}.JPEG": _jpeg(20 * i) for i in range(1, 11)}
    val_tar = tmp_path / "ILSVRC2012_img_val.tar"
    val_tar.write_bytes(_tar_bytes(images))
    return val_tar, devkit, images


TRAIN_CLASSES = {"n01440764": 5, "n02100735": 4, "n02119789": 6, "n01443537": 0}


@pytest.fixture
def train_tar(tmp_path: Path) -> tuple[Path, dict[tuple[str, str], bytes]]:
    """(train tar of per-class tars, {(wnid, file name): JPEG bytes})."""
    images: dict[tuple[str, str], bytes] = {}
    outer: dict[str, bytes] = {}
    for c, (wnid, count) in enumerate(TRAIN_CLASSES.items()):
        inner = {f"{wnid}_{100 + i}.JPEG": _jpeg(50 * c + i) for i in range(count)}
        images.update({(wnid, name): data for name, data in inner.items()})
        outer[f"{wnid}.tar"] = _tar_bytes(inner)
    path = tmp_path / "ILSVRC2012_img_train.tar"
    path.write_bytes(_tar_bytes(outer))
    return path, images


def _load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def extract_val() -> ModuleType:
    return _load_script("extract_val")


@pytest.fixture(scope="module")
def extract_calib() -> ModuleType:
    return _load_script("extract_calib")


def _files(root: Path) -> dict[tuple[str, str], bytes]:
    return {(p.parent.name, p.name): p.read_bytes() for p in root.glob("*/*") if p.is_file()}


# --- extract_val -------------------------------------------------------------------------------


def _val_argv(val_tar: Path, devkit: Path, out: Path) -> list[str]:
    return [
        "--val-tar",
        str(val_tar),
        "--devkit",
        str(devkit),
        "--output",
        str(out),
        "--no-progress",
    ]


def test_extract_val_sorts_images_into_wnid_folders(tmp_path, val_archives, extract_val):
    val_tar, devkit, images = val_archives
    out = tmp_path / "imagenet-val"
    assert extract_val.main(_val_argv(val_tar, devkit, out)) == 0
    expected = {
        (LEAVES[GROUND_TRUTH[int(name[15:23]) - 1]], name): data for name, data in images.items()
    }
    assert _files(out) == expected
    assert not out.with_name("imagenet-val.partial").exists()
    dataset = imagenet_folder(out)
    assert dataset.classes == sorted(LEAVES.values())
    labels = {Path(path).name: dataset.classes[target] for path, target in dataset.samples}
    assert labels["ILSVRC2012_val_00000001.JPEG"] == LEAVES[GROUND_TRUTH[0]]


def test_extract_val_rerun_is_a_no_op(tmp_path, val_archives, extract_val, caplog):
    val_tar, devkit, _ = val_archives
    out = tmp_path / "imagenet-val"
    argv = _val_argv(val_tar, devkit, out)
    assert extract_val.main(argv) == 0
    stamp = (out / MANIFEST_NAME).stat().st_mtime_ns
    caplog.clear()
    caplog.set_level(logging.INFO)
    assert extract_val.main(argv) == 0
    assert "nothing to do" in caplog.text
    assert (out / MANIFEST_NAME).stat().st_mtime_ns == stamp


def test_extract_val_incomplete_archive_leaves_no_output(
    tmp_path, val_archives, extract_val, caplog
):
    _, devkit, images = val_archives
    short_tar = tmp_path / "short.tar"
    short_tar.write_bytes(_tar_bytes(dict(list(images.items())[:-1])))
    out = tmp_path / "imagenet-val"
    assert extract_val.main(_val_argv(short_tar, devkit, out)) == 1
    assert "ILSVRC2012_val_00000010.JPEG" in caplog.text
    assert not out.exists() and not out.with_name("imagenet-val.partial").exists()


def test_extract_val_refuses_foreign_output_unless_overwrite(tmp_path, val_archives, extract_val):
    val_tar, devkit, _ = val_archives
    out = tmp_path / "imagenet-val"
    (out / "n99999999").mkdir(parents=True)
    argv = _val_argv(val_tar, devkit, out)
    assert extract_val.main(argv) == 1
    assert extract_val.main([*argv, "--overwrite"]) == 0
    assert not (out / "n99999999").exists()
    assert len(_files(out)) == len(GROUND_TRUTH)


def test_extract_val_missing_devkit_names_the_path(tmp_path, val_archives, extract_val, caplog):
    val_tar, _, _ = val_archives
    missing = tmp_path / "nope.tar.gz"
    argv = ["--val-tar", str(val_tar), "--devkit", str(missing), "--output", str(tmp_path / "o")]
    assert extract_val.main(argv) == 1
    assert str(missing) in caplog.text


# --- extract_calib -----------------------------------------------------------------------------


def _calib(
    module: ModuleType, train: Path, out: Path, size: int, seed: int, overwrite=False
) -> int:
    argv = ["--train-tar", str(train), "--output", str(out), "--size", str(size)]
    argv += ["--seed", str(seed), "--no-progress"] + (["--overwrite"] if overwrite else [])
    return module.main(argv)


def test_extract_calib_copies_a_sample_with_every_class_folder(tmp_path, train_tar, extract_calib):
    path, images = train_tar
    out = tmp_path / "imagenet-calib"
    assert _calib(extract_calib, path, out, size=6, seed=0) == 0
    files = _files(out)
    assert len(files) == 6
    assert all(images[key] == data for key, data in files.items())  # byte-exact copies
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted(TRAIN_CLASSES)
    assert imagenet_folder(out).classes == sorted(TRAIN_CLASSES)


def test_extract_calib_sample_is_seeded(tmp_path, train_tar, extract_calib):
    path, _ = train_tar
    samples = {}
    for name, seed in [("a", 0), ("b", 0), ("c", 1)]:
        assert _calib(extract_calib, path, tmp_path / name, size=6, seed=seed) == 0
        samples[name] = set(_files(tmp_path / name))
    assert samples["a"] == samples["b"]
    assert samples["a"] != samples["c"]


def test_extract_calib_rerun_and_settings_change(tmp_path, train_tar, extract_calib, caplog):
    path, _ = train_tar
    out = tmp_path / "imagenet-calib"
    assert _calib(extract_calib, path, out, size=4, seed=0) == 0
    caplog.clear()
    caplog.set_level(logging.INFO)
    assert _calib(extract_calib, path, out, size=4, seed=0) == 0
    assert "nothing to do" in caplog.text
    assert _calib(extract_calib, path, out, size=5, seed=0) == 1  # other settings: refuse
    assert _calib(extract_calib, path, out, size=5, seed=0, overwrite=True) == 0
    assert len(_files(out)) == 5


def test_extract_calib_rejects_a_sample_larger_than_the_archive(tmp_path, train_tar, extract_calib):
    path, images = train_tar
    out = tmp_path / "imagenet-calib"
    assert _calib(extract_calib, path, out, size=len(images) + 1, seed=0) == 1
    assert not out.exists()


# --- command line ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["extract_val", "extract_calib"])
def test_help_shows_config_defaults(name, capsys):
    with pytest.raises(SystemExit) as info:
        _load_script(name).main(["--help"])
    assert info.value.code == 0
    assert "configs/imagenet_data.yaml" in capsys.readouterr().out


def test_shell_wrapper_runs_the_script(tmp_path, val_archives):
    val_tar, devkit, _ = val_archives
    out = tmp_path / "imagenet-val"
    # run with this interpreter (the wrapper honours $PYTHON) and the repository's lib/ importable
    paths = [str(REPO / "lib"), os.environ.get("PYTHONPATH", "")]
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
    }
    argv = _val_argv(val_tar, devkit, out)
    result = subprocess.run(
        ["bash", str(SCRIPTS / "extract_val.sh"), *argv], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert len(_files(out)) == len(GROUND_TRUTH)
