"""Inputs that ended in a raw KeyError/TypeError/OSError/pickle or torch error now give a
BALFError naming the input and the fix; killed saves leave no orphans."""

from __future__ import annotations

import copy
import json
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn

import balf
from balf_paper.models.cifar_resnet_a import load_third_party_checkpoint, option_a_resnet


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4)).eval()


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    out, _ = balf.compress(_mlp(), torch.randn(64, 16), balf.RankRatioConfig(0.5), progress=False)
    return out


# -- malformed specs ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda e: e.pop("dense"), "'dense' is missing"),
        (lambda e: e.pop("rank"), "'rank' is missing"),
        (lambda e: e.__setitem__("rank", "4"), "'rank' is '4', not a positive integer"),
    ],
    ids=["no-dense", "no-rank", "rank-string"],
)
def test_a_malformed_spec_entry_is_named(small, change, message):
    spec = copy.deepcopy(balf.model_spec(small))
    change(spec["layers"][0])
    with pytest.raises(balf.SaveFormatError, match=rf"entry 0 \('0'\).*{message}.*save the model"):
        balf.apply_spec(_mlp(), spec)


def test_an_alias_to_a_missing_tensor_is_named(small, tmp_path):
    spec = copy.deepcopy(balf.model_spec(small))
    spec["aliases"] = {"0.first.weight": "nope"}
    tensors = {k: v.contiguous() for k, v in small.state_dict().items() if k != "0.first.weight"}
    path = tmp_path / "a.safetensors"
    path.write_bytes(safetensors_bytes(tensors, metadata={"balf": json.dumps(spec)}))
    with pytest.raises(balf.SaveFormatError, match=r"alias of 'nope', which is not in the file"):
        balf.load(path, _mlp())


# -- latency mode ------------------------------------------------------------------------------


class _Tokens(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(100, 64)
        self.up = nn.Linear(64, 256)
        self.out = nn.Linear(256, 4)

    def forward(self, tokens):
        return self.out(torch.relu(self.up(self.emb(tokens)))).mean(1)


class _TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.Linear(64, 256)
        self.out = nn.Linear(256, 4)

    def forward(self, x, y=None):
        return self.out(torch.relu(self.up(x if y is None else x + y)))


_LATENCY = {"min_run_time": 0.002, "points": 2}


def test_latency_mode_with_integer_inputs_measures_the_model():
    compressor = balf.Compressor(
        _Tokens().eval(), torch.randint(0, 100, (8, 5)), latency=_LATENCY, progress=False
    )
    table = compressor.latency_table()
    assert set(table.layers) == {"up", "out"} and table.model > 0


@pytest.mark.parametrize("batches,kwargs,what", [
    ([((torch.randn(8, 64),), {"y": torch.randn(8, 64)})], {}, r"\(args, kwargs\) pairs"),
    ([{"x": torch.randn(8, 64)}], {"forward": lambda m, b: m(**b)}, "forward callable"),
], ids=["args-kwargs", "dict"])  # fmt: skip
def test_latency_mode_with_other_batch_structures_is_a_clear_error(batches, kwargs, what):
    config = balf.BALFConfig(0.9, metric="latency")
    with pytest.raises(balf.BALFError, match=rf"metric=\"latency\".*{what}.*measure_latency"):
        balf.compress(_TwoInputs(), batches, config, latency=_LATENCY, progress=False, **kwargs)


def test_a_truncated_latency_cache_file_is_measured_again(tmp_path):
    model = _TwoInputs().eval()
    x, layers = torch.randn(1, 64), {"up": model.up}
    balf.ranks.latency.measure_latency(
        model, x, layers, cache_dir=tmp_path, progress=False, **_LATENCY
    )
    (entry,) = (tmp_path / "latency").glob("*.json")
    entry.write_text(entry.read_text()[:20])
    with pytest.warns(UserWarning, match="corrupt latency cache entry"):
        table = balf.ranks.latency.measure_latency(
            model, x, layers, cache_dir=tmp_path, progress=False, **_LATENCY
        )
    assert "up" in table.layers
    assert json.loads(entry.read_text())["layers"]  # rewritten whole


# -- third-party checkpoints ---------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"hello, not a checkpoint", b""], ids=["text", "empty"])
def test_an_unreadable_third_party_checkpoint_is_named(tmp_path, content):
    path = tmp_path / "resnet20-12fca82f.th"
    path.write_bytes(content)
    with pytest.raises(balf.BALFError, match=r"resnet20-12fca82f\.th is not a readable PyTorch"):
        load_third_party_checkpoint(option_a_resnet("resnet20a"), path)


def test_a_string_best_prec1_is_named(tmp_path):
    model = option_a_resnet("resnet20a")
    path = tmp_path / "resnet20-12fca82f.th"
    torch.save({"state_dict": model.state_dict(), "best_prec1": "91.7"}, path)
    with pytest.raises(balf.BALFError, match=r"'best_prec1' is '91.7', not a number"):
        load_third_party_checkpoint(option_a_resnet("resnet20a"), path)


# -- sweeps, export, models, options ---------------------------------------------------------------


def test_save_model_into_an_unusable_directory_fails_before_the_first_point(tmp_path, monkeypatch):
    from balf_paper.experiments.sweep import SweepConfig, run_sweep

    calls = []
    monkeypatch.setattr(balf.Compressor, "compress", lambda *a, **k: calls.append(1))
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file")
    x = torch.randn(8, 16)
    config = SweepConfig("synthetic", "mlp", "flops_auto", [0.6], calib_size=8)
    with pytest.raises(balf.BALFError, match=r"--save-model .*not-a-dir is a file"):
        run_sweep(config, _mlp(), [x], [(x, torch.arange(8) % 4)], tmp_path / "run",
                  example_input=x[:1], progress=False, argv=["t"], save_dir=blocker)  # fmt: skip
    assert calls == [] and not (tmp_path / "run" / "results.json").exists()


def test_export_onnx_to_a_directory_is_named(small, tmp_path):
    with pytest.raises(balf.BALFError, match="is a directory; pass the .onnx file"):
        balf.io.export.export_onnx(small, torch.randn(1, 16), tmp_path)


def test_a_model_on_the_meta_device_is_refused():
    with torch.device("meta"):
        model = _mlp()
    with pytest.raises(balf.BALFError, match="meta device.*load its trained weights"):
        balf.compress(model, torch.randn(8, 16), balf.BALFConfig(0.5), progress=False)


@pytest.mark.parametrize("batch_size", [0, -1, 2.5])
def test_a_non_positive_batch_size_is_refused(batch_size):
    with pytest.raises(balf.BALFError, match="batch_size must be a positive integer"):
        balf.compress(_mlp(), torch.randn(8, 16), balf.BALFConfig(0.5), batch_size=batch_size,
                      progress=False)  # fmt: skip


def test_temporary_files_of_a_killed_save_are_removed_by_the_next_save(small, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    host = "".join(c if c.isalnum() or c in "_-" else "-" for c in socket.gethostname())
    orphan = tmp_path / f".m.safetensors.pid{dead.stdout.strip()}@{host}.x1y2.tmp"
    orphan.write_bytes(b"\0" * 1024)
    other = tmp_path / f".other.safetensors.pid{dead.stdout.strip()}@{host}.x1y2.tmp"
    other.write_bytes(b"\0")
    balf.save(small, tmp_path / "m.safetensors")
    assert not orphan.exists()
    assert other.exists()  # another file's temporaries are left alone
