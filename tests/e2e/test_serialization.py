"""balf.save / balf.load: safetensors + JSON spec, reloaded in a fresh process without pickle.

- A compressed CIFAR ResNet-20, torchvision ResNet-18, tiny timm ViT and a hand-made module tree
  saved here load in a *fresh subprocess* (random and meta-initialised architectures) and give
  identical outputs, with every ``pickle`` entry point disabled there.
- The file opens with ``safetensors.safe_open``; it is not a zip/pickle archive.
- A spec that does not fit the model (missing layer, other shape, unknown format version or
  kind) is a :class:`balf.SaveFormatError` naming the layer.
- ``report`` ↔ spec: :func:`balf.spec_from_report` equals the spec of the compressed model.
- A low-rank class registered the balf 0.1 way (``register_layer_kind(cls)``) still works.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

import balf
from balf.layers.kind import _BY_NAME

REPO = Path(__file__).resolve().parents[2]

# Architectures by name, built the same way here and in the subprocess.
BUILDERS = """
import torch, timm, torchvision
from torch import nn
from balf_paper.models import create_model

class Tree(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.blocks = nn.ModuleDict({"a": nn.Conv2d(8, 8, 3, padding="same", groups=2),
                                     "b": nn.Conv2d(8, 16, 3, stride=2, dilation=2, bias=False)})
        self.head = nn.ModuleList([nn.Linear(16, 24), nn.Linear(24, 5)])
    def forward(self, x):
        x = self.blocks["b"](self.blocks["a"](self.stem(x))).mean((2, 3))
        return self.head[1](torch.relu(self.head[0](x)))

def build(name):
    if name == "resnet20":
        return create_model("resnet20", pretrained=False)
    if name == "resnet18":
        return torchvision.models.resnet18(weights=None, num_classes=10)
    if name == "vit_tiny":
        return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                                 num_classes=10)
    if name == "tree":
        return Tree()
    raise ValueError(name)

INPUT = {"resnet20": (2, 3, 32, 32), "resnet18": (2, 3, 64, 64), "vit_tiny": (2, 3, 32, 32),
         "tree": (2, 3, 12, 12)}
"""
NAMES = ["resnet20", "resnet18", "vit_tiny", "tree"]

LOADER = """
import pickle, sys
def _no_pickle(*args, **kwargs):
    raise AssertionError("pickle was used")
pickle.load = pickle.loads = _no_pickle
pickle.Unpickler = _no_pickle
import balf
from safetensors.torch import load_file, save_file
folder = sys.argv[1]
outputs = {}
for name in sys.argv[2:]:
    torch.manual_seed(123)  # other random weights than the saving process
    for init in ("random", "meta"):
        if init == "meta":
            with torch.device("meta"):
                model = build(name)
        else:
            model = build(name)
        model = balf.load(f"{folder}/{name}.safetensors", model)
        x = load_file(f"{folder}/{name}.input.safetensors")["x"]
        with torch.no_grad():
            outputs[f"{name}.{init}"] = model(x).contiguous()
save_file(outputs, f"{folder}/outputs.safetensors")
"""


def _namespace() -> dict:
    ns: dict = {}
    exec(BUILDERS, ns)  # noqa: S102 (the same source the subprocess runs)
    return ns


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor], dict]:
    """Compress each architecture, save it, and reload all in one fresh subprocess."""
    folder = tmp_path_factory.mktemp("saved")
    ns = _namespace()
    expected, reports = {}, {}
    for name in NAMES:
        torch.manual_seed(0)
        model = ns["build"](name).eval()
        shape = ns["INPUT"][name]
        calib = torch.randn(16, *shape[1:])
        small, report = balf.compress(model, calib, balf.BALFConfig(0.5), progress=False)
        assert sum(lr.factorized for lr in report.layers.values()) > 0
        balf.save(small, folder / f"{name}.safetensors")
        x = torch.randn(*shape)
        save_file({"x": x}, str(folder / f"{name}.input.safetensors"))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the subprocess runs single-threaded: same kernels, same bits
        try:
            with torch.no_grad():
                expected[name] = small.eval()(x)
        finally:
            torch.set_num_threads(threads)
        reports[name] = (model, small, report)
    script = BUILDERS + LOADER
    env = {"PYTHONPATH": str(REPO / "lib"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", script, str(folder), *NAMES],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return folder, expected, reports


@pytest.mark.parametrize("init", ["random", "meta"])
@pytest.mark.parametrize("name", NAMES)
def test_reload_in_fresh_process_gives_identical_outputs(saved, name, init):
    folder, expected, _ = saved
    outputs = load_file(str(folder / "outputs.safetensors"))
    assert torch.equal(outputs[f"{name}.{init}"], expected[name])


@pytest.mark.parametrize("name", NAMES)
def test_file_is_plain_safetensors_with_json_spec(saved, name):
    folder, _, reports = saved
    path = folder / f"{name}.safetensors"
    assert path.read_bytes()[:2] != b"PK"  # not a torch.save zip (pickle) archive
    with safe_open(str(path), framework="pt") as f:
        spec = json.loads(f.metadata()["balf"])
        keys = set(f.keys())
    _, small, _ = reports[name]
    assert keys == set(small.state_dict()) - set(spec["aliases"])
    assert spec["format_version"] == balf.io.serialization.FORMAT_VERSION
    assert spec["library_version"] == balf.__version__
    assert spec == balf.read_spec(path)
    for entry in spec["layers"]:
        layer = small.get_submodule(entry["name"])
        assert entry["kind"] == layer.kind and entry["rank"] == layer.rank


@pytest.mark.parametrize("name", NAMES)
def test_report_gives_the_spec(saved, name):
    _, _, reports = saved
    model, small, report = reports[name]
    assert balf.spec_from_report(report, model) == balf.model_spec(small)
    rebuilt = balf.apply_spec(_namespace()["build"](name), balf.spec_from_report(report, model))
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in small.state_dict().items()
    }


def _tiny_saved(tmp_path: Path) -> tuple[Path, nn.Module]:
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8))
    small, _ = balf.compress(model, torch.randn(32, 8), balf.BALFConfig(0.4), progress=False)
    assert isinstance(small[0], balf.LowRankLinear)
    return balf.save(small, tmp_path / "m.safetensors"), small


@pytest.mark.parametrize("rank", [17, 4 * 10**8], ids=["one-above", "huge"])
def test_a_rank_above_the_full_rank_is_refused_before_allocating(tmp_path, rank):
    """A spec from elsewhere with rank 4e8 for a 16×8 layer would allocate ~25 GB of factors."""
    path, _ = _tiny_saved(tmp_path)
    spec = balf.read_spec(path)
    spec["layers"][0]["rank"] = rank
    fresh = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8))
    with pytest.raises(balf.SaveFormatError, match=rf"'0' .*rank {rank}, above its full rank 8"):
        balf.apply_spec(fresh, spec)


@pytest.mark.parametrize("init", ["random", "meta"])
def test_load_on_the_meta_device_gives_the_structure_on_meta(tmp_path, init):
    """``device="meta"`` is honoured (it used to load on the CPU): every tensor on meta with
    the saved shape and dtype."""
    path, small = _tiny_saved(tmp_path)
    with torch.device("meta" if init == "meta" else "cpu"):
        fresh = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8))
    loaded = balf.load(path, fresh, device="meta")
    tensors = dict(loaded.state_dict())
    assert tensors and all(t.is_meta for t in tensors.values())
    assert {k: (t.shape, t.dtype) for k, t in tensors.items()} == {
        k: (t.shape, t.dtype) for k, t in small.state_dict().items()
    }
    assert isinstance(loaded[0], balf.LowRankLinear)


def test_missing_layer_is_named(tmp_path):
    path, _ = _tiny_saved(tmp_path)
    with pytest.raises(balf.SaveFormatError, match=r"layer '0' .*missing"):
        balf.load(path, nn.Sequential())


def test_wrong_shape_is_named(tmp_path):
    path, _ = _tiny_saved(tmp_path)
    other = nn.Sequential(nn.Linear(8, 12), nn.ReLU(), nn.Linear(12, 8))
    with pytest.raises(balf.SaveFormatError, match=r"layer '0' has another shape"):
        balf.load(path, other)


def test_other_layer_type_is_named(tmp_path):
    path, _ = _tiny_saved(tmp_path)
    other = nn.Sequential(nn.Conv2d(8, 16, 1), nn.ReLU(), nn.Linear(16, 8))
    with pytest.raises(balf.SaveFormatError, match=r"layer '0' is a Conv2d"):
        balf.load(path, other)


def test_unexpected_tensor_is_named(tmp_path):
    path, _ = _tiny_saved(tmp_path)
    other = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8), nn.LayerNorm(8))
    with pytest.raises(balf.SaveFormatError, match=r"missing tensors \['3.weight'"):
        balf.load(path, other)


def test_incompatible_format_version_is_refused(tmp_path):
    path, small = _tiny_saved(tmp_path)
    spec = balf.read_spec(path)
    spec["format_version"] = 99
    tensors = load_file(str(path))
    save_file(tensors, str(tmp_path / "future.safetensors"), metadata={"balf": json.dumps(spec)})
    with pytest.raises(balf.SaveFormatError, match="save format 99"):
        balf.load(tmp_path / "future.safetensors", nn.Sequential(nn.Linear(8, 16)))


def test_plain_safetensors_file_is_refused(tmp_path):
    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(balf.SaveFormatError, match="no balf spec"):
        balf.read_spec(tmp_path / "plain.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(balf.SaveFormatError, match="not a safetensors file"):
        balf.read_spec(tmp_path / "junk.safetensors")


def test_tied_weights_are_saved_once_and_restored(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    model[1].weight = model[0].weight
    path = balf.save(model, tmp_path / "tied.safetensors")
    assert balf.read_spec(path)["aliases"] == {"1.weight": "0.weight"}
    loaded = balf.load(path, nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4)))
    x = torch.randn(3, 4)
    assert torch.equal(loaded(x), model(x))


def test_root_layer_is_replaced(tmp_path):
    layer = nn.Linear(16, 16)
    small, _ = balf.compress(layer, torch.randn(64, 16), balf.BALFConfig(0.3), progress=False)
    path = balf.save(small, tmp_path / "root.safetensors")
    loaded = balf.load(path, nn.Linear(16, 16))
    x = torch.randn(2, 16)
    assert isinstance(loaded, balf.LowRankLinear) and torch.equal(loaded(x), small(x))


class _LowRankTwice(nn.Module):
    """A toy layer kind standing in for a new one (e.g. Conv1d): replaces an nn.PReLU."""

    kind = "toy_prelu"
    dense_type = nn.PReLU

    def __init__(self, num_parameters: int, rank: int, device=None, dtype=None):
        super().__init__()
        self.rank = rank
        self.a = nn.PReLU(num_parameters, device=device, dtype=dtype)

    @staticmethod
    def dense_spec(dense: nn.PReLU) -> dict:
        return {"num_parameters": dense.num_parameters}

    def spec(self) -> dict:
        return {
            "kind": self.kind,
            "rank": self.rank,
            "dense": {"num_parameters": self.a.num_parameters},
        }

    @classmethod
    def from_spec(cls, spec, device=None, dtype=None):
        return cls(spec["dense"]["num_parameters"], spec["rank"], device, dtype)

    def forward(self, x):
        return self.a(x)


def test_a_low_rank_class_registered_the_0_1_way_still_saves_and_reloads(tmp_path):
    with pytest.warns(DeprecationWarning, match="register a LayerKind"):
        balf.register_layer_kind(_LowRankTwice)
    try:
        model = nn.Sequential(nn.Linear(4, 4), _LowRankTwice(4, 2))
        nn.init.uniform_(model[1].a.weight)
        path = balf.save(model, tmp_path / "toy.safetensors")
        loaded = balf.load(path, nn.Sequential(nn.Linear(4, 4), nn.PReLU(4)))
        assert isinstance(loaded[1], _LowRankTwice)
        x = torch.randn(3, 4)
        assert torch.equal(loaded(x), model(x))
        with pytest.raises(balf.BALFError, match="already registered"):
            with pytest.warns(DeprecationWarning):
                balf.register_layer_kind(type("Other", (_LowRankTwice,), {}))
    finally:
        _BY_NAME.pop("toy_prelu", None)


def test_unknown_kind_is_named(tmp_path):
    path, _ = _tiny_saved(tmp_path)
    spec = balf.read_spec(path)
    spec["layers"][0]["kind"] = "conv9d"
    with pytest.raises(balf.SaveFormatError, match=r"layer '0' has kind 'conv9d'"):
        balf.apply_spec(nn.Sequential(nn.Linear(8, 16)), spec)


def test_conv1d_layers_save_and_reload(tmp_path):
    """Every layer kind with an adapter saves and reloads: here the Conv1d kind."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(8, 24, 3, padding=1), nn.ReLU(), nn.Conv1d(24, 16, 5, stride=2, groups=2)
    ).eval()
    calib = torch.randn(32, 8, 20)
    small, report = balf.compress(model, calib, balf.BALFConfig(0.4), progress=False)
    assert any(isinstance(m, balf.LowRankConv1d) for m in small.modules())
    balf.save(small, tmp_path / "conv1d.safetensors")
    kinds = {layer["kind"] for layer in balf.read_spec(tmp_path / "conv1d.safetensors")["layers"]}
    assert "conv1d" in kinds
    fresh = nn.Sequential(
        nn.Conv1d(8, 24, 3, padding=1), nn.ReLU(), nn.Conv1d(24, 16, 5, stride=2, groups=2)
    )
    loaded = balf.load(tmp_path / "conv1d.safetensors", fresh).eval()
    x = torch.randn(3, 8, 20)
    with torch.no_grad():
        assert torch.equal(loaded(x), small(x))
