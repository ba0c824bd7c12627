"""Compressed Hugging Face models through ``save_pretrained``/``from_pretrained``.

A compressed model saved with its own ``model.save_pretrained`` or with ``balf.save_pretrained``
(the same folder) reloads exactly with ``from_pretrained``, the auto classes or
``balf.load_pretrained``, once balf is imported; without balf the load fails instead of
initialising the factorized layers at random. Families: Llama with tied embeddings, GPT-2
(``Conv1D``), BERT; tiny random-weight configs built here (no download); safetensors only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import balf

transformers = pytest.importorskip("transformers")
from _hf_models import tiny_bert_config, tiny_gpt2_config, tiny_llama_config  # noqa: E402

LIB = Path(balf.__file__).resolve().parents[1]
VOCAB = 64
IDS = torch.randint(0, VOCAB, (4, 12), generator=torch.Generator().manual_seed(1))


def _dense(family: str):
    torch.manual_seed(0)
    if family == "llama":  # tied: lm_head shares the embedding and stays dense
        return transformers.LlamaForCausalLM(tiny_llama_config(tie_word_embeddings=True)).eval()
    if family == "gpt2":
        return transformers.GPT2LMHeadModel(tiny_gpt2_config()).eval()
    return transformers.BertModel(tiny_bert_config(num_attention_heads=2)).eval()


AUTO = {"llama": "AutoModelForCausalLM", "gpt2": "AutoModelForCausalLM", "bert": "AutoModel"}
FAMILIES = list(AUTO)


@pytest.fixture(scope="module")
def compressed():
    """``{family: (compressed model, report)}``, made once for the module."""
    out = {}
    for family in FAMILIES:
        batches = [{"input_ids": IDS}, {"input_ids": IDS.flip(0)}]
        exclude = ["pooler.dense"] if family == "bert" else None  # one row per sample: too few
        out[family] = balf.compress(_dense(family), batches, balf.BALFConfig(0.5),
                                    exclude=exclude, progress=False)  # fmt: skip
    return out


def _out(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS)[0]


def _save(model, folder: Path, way: str) -> Path:
    if way == "model.save_pretrained":
        model.save_pretrained(folder)
    else:
        balf.save_pretrained(model, folder)
    return folder


def _ranks(model) -> dict[str, int]:
    return {e["name"]: e["rank"] for e in balf.model_spec(model)["layers"]}


# -- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("load_way", ["from_pretrained", "auto class", "balf.load_pretrained"])
@pytest.mark.parametrize("save_way", ["model.save_pretrained", "balf.save_pretrained"])
@pytest.mark.parametrize("family", FAMILIES)
def test_saved_either_way_reloads_identically_either_way(
    tmp_path, compressed, family, save_way, load_way
):
    small, report = compressed[family]
    assert report.layers and any(layer.factorized for layer in report.layers.values())
    folder = _save(small, tmp_path / "saved", save_way)
    if load_way == "balf.load_pretrained":
        again = balf.load_pretrained(folder)
    else:
        cls = type(small) if load_way == "from_pretrained" else getattr(transformers, AUTO[family])
        again, info = cls.from_pretrained(folder, output_loading_info=True)
        assert info == {"missing_keys": set(), "unexpected_keys": set(),
                        "mismatched_keys": set(), "error_msgs": []}  # fmt: skip
    assert type(again) is type(small) and not again.training
    assert _ranks(again) == _ranks(small) == {
        n: lr.rank for n, lr in report.layers.items() if lr.factorized}  # fmt: skip
    torch.testing.assert_close(_out(again), _out(small), rtol=0, atol=0)
    assert balf.count_params(again) == balf.count_params(small)
    # a reloaded model saves and reloads the same again
    twice = type(small).from_pretrained(_save(again, tmp_path / "twice", save_way))
    torch.testing.assert_close(_out(twice), _out(small), rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_both_ways_write_the_same_folder(tmp_path, compressed, family):
    small, _ = compressed[family]
    own = _save(small, tmp_path / "own", "model.save_pretrained")
    ours = _save(small, tmp_path / "balf", "balf.save_pretrained")
    assert sorted(p.name for p in own.iterdir()) == sorted(p.name for p in ours.iterdir())
    assert "model.safetensors" in {p.name for p in own.iterdir()}
    assert json.loads((own / "config.json").read_text()) == json.loads(
        (ours / "config.json").read_text())  # fmt: skip
    with safe_open(own / "model.safetensors", "pt") as a, safe_open(ours / "model.safetensors",
                                                                       "pt") as b:  # fmt: skip
        assert set(a.keys()) == set(b.keys())
        assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())  # noqa: SIM118
    assert not list(tmp_path.glob(".*saving*")), "the staging folder is removed"


@pytest.mark.parametrize("family", FAMILIES)
def test_the_config_records_the_factorization_and_guards_every_dense_name(
    tmp_path, compressed, family
):
    small, report = compressed[family]
    assert small.config.quantization_config.ranks == {
        n: lr.rank for n, lr in report.layers.items() if lr.factorized}  # fmt: skip
    folder = _save(small, tmp_path / "saved", "model.save_pretrained")
    quantization = json.loads((folder / "config.json").read_text())["quantization_config"]
    assert quantization["quant_method"] == "balf"
    assert quantization["spec"]["layers"] == balf.model_spec(small)["layers"]
    dense = dict(_dense(family).named_parameters())
    with safe_open(folder / "model.safetensors", "pt") as f:
        for entry in quantization["spec"]["layers"]:
            guard = f.get_slice(f"{entry['name']}.weight")  # the dense weight's name
            assert guard.get_dtype() == "U8"
            assert tuple(guard.get_shape()) != tuple(dense[f"{entry['name']}.weight"].shape)


def test_the_reloaded_model_is_not_marked_quantized(tmp_path, compressed):
    small, _ = compressed["llama"]
    again = transformers.AutoModelForCausalLM.from_pretrained(
        _save(small, tmp_path / "saved", "model.save_pretrained"))  # fmt: skip
    assert again.is_quantized is False and not hasattr(again.config, "_is_quantized")
    assert again.hf_quantizer.is_trainable
    assert again.half().dtype == torch.float16  # refused for quantized models
    assert "_init_weights" not in vars(again.model)  # the loading-time wrapper is gone


def test_the_base_model_loads_from_a_head_models_folder(tmp_path):
    torch.manual_seed(0)
    dense = transformers.LlamaForCausalLM(tiny_llama_config()).eval()  # untied: lm_head factorized
    small, report = balf.compress(dense, [{"input_ids": IDS}], balf.BALFConfig(0.5), progress=False)
    assert report.layers["lm_head"].factorized
    folder = _save(small, tmp_path / "saved", "model.save_pretrained")
    base = transformers.AutoModel.from_pretrained(folder)
    with torch.no_grad():
        torch.testing.assert_close(base(IDS).last_hidden_state, small.model(IDS).last_hidden_state,
                                   rtol=0, atol=0)  # fmt: skip


def test_a_model_loaded_with_balf_load_saves_the_hugging_face_way(tmp_path, compressed):
    small, _ = compressed["gpt2"]
    path = balf.save(small, tmp_path / "m.safetensors")
    loaded = balf.load(path, _dense("gpt2"))  # the dense architecture, unmarked
    loaded.save_pretrained(tmp_path / "saved")
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "saved")
    torch.testing.assert_close(_out(again), _out(small), rtol=0, atol=0)


def test_load_pretrained_puts_the_model_on_the_device(tmp_path, compressed):
    small, _ = compressed["bert"]
    folder = _save(small, tmp_path / "saved", "balf.save_pretrained")
    again = balf.load_pretrained(folder, device="cpu")
    assert {p.device.type for p in again.parameters()} == {"cpu"}


# -- without balf ---------------------------------------------------------------------------------

_WITHOUT_BALF = """
import sys, transformers
for folder, cls in {cases!r}:
    try:
        getattr(transformers, cls).from_pretrained(folder)
    except Exception as exc:
        print("REFUSED", cls, type(exc).__name__, "balf" in sys.modules)
    else:
        print("LOADED", cls)
"""


def _python(code: str, pythonpath: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def test_without_balf_the_folder_fails_loudly_naming_balf(tmp_path, compressed):
    cases = []
    for family in FAMILIES:
        folder = _save(compressed[family][0], tmp_path / family, "model.save_pretrained")
        cases += [(str(folder), AUTO[family]), (str(folder), type(compressed[family][0]).__name__)]
    done = _python(_WITHOUT_BALF.format(cases=cases), pythonpath=None)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == len(cases)
    assert all(line.startswith("REFUSED") and line.endswith("RuntimeError False") for line in lines)
    # transformers names the unknown method before refusing the mismatched (guard) tensors
    assert done.stderr.count("Unknown quantization type, got balf") == len(cases)
    assert "MISMATCH" in done.stderr


_FRESH_PROCESS = """
import sys, torch
{first}
assert "transformers" not in sys.modules or {transformers_first}, "balf imported transformers"
{second}
model = transformers.AutoModelForCausalLM.from_pretrained({folder!r})
with torch.no_grad():
    torch.save(model(torch.load({ids!r}))[0], {out!r})
"""


@pytest.mark.parametrize(
    "transformers_first", [False, True], ids=["balf first", "transformers first"]
)
def test_import_balf_is_enough_for_the_auto_classes(tmp_path, compressed, transformers_first):
    small, _ = compressed["llama"]
    folder = _save(small, tmp_path / "saved", "model.save_pretrained")
    torch.save(IDS, tmp_path / "ids.pt")
    first, second = ("import transformers", "import balf")[:: -1 if not transformers_first else 1]
    code = _FRESH_PROCESS.format(first=first, second=second, transformers_first=transformers_first,
                                 folder=str(folder), ids=str(tmp_path / "ids.pt"),
                                 out=str(tmp_path / "out.pt"))  # fmt: skip
    done = _python(code, pythonpath=str(LIB))
    assert done.returncode == 0, done.stderr
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), _out(small), rtol=0, atol=0)


# -- folders: other contents ----------------------------------------------------------------------


def test_a_plain_folder_loads_with_load_pretrained(tmp_path):
    dense = _dense("bert")
    dense.save_pretrained(tmp_path / "plain")
    again = balf.load_pretrained(tmp_path / "plain")
    torch.testing.assert_close(_out(again), _out(dense), rtol=0, atol=0)


def test_saving_over_a_dense_folder_replaces_its_weights(tmp_path, compressed):
    small, _ = compressed["llama"]
    _dense("llama").save_pretrained(tmp_path)
    (tmp_path / "pytorch_model.bin").write_bytes(b"stale")  # another format's weights
    balf.save_pretrained(small, tmp_path)
    assert not (tmp_path / "pytorch_model.bin").exists()
    again = balf.load_pretrained(tmp_path)
    torch.testing.assert_close(_out(again), _out(small), rtol=0, atol=0)


def _legacy_folder(small, folder: Path) -> Path:
    """A folder as balf 0.2's save_pretrained wrote it (config, balf_spec.json, weights)."""
    folder.mkdir()
    config = small.config.to_dict()
    config.pop("quantization_config")
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "balf_spec.json").write_text(json.dumps({"model_class": type(small).__name__}))
    balf.save(small, folder / "balf_model.safetensors")
    return folder


@pytest.mark.parametrize("accelerate", ["with accelerate", "without accelerate"])
def test_balf_0_2_folders_still_load(tmp_path, compressed, monkeypatch, accelerate):
    small, _ = compressed["llama"]
    folder = _legacy_folder(small, tmp_path / "old")
    if accelerate == "without accelerate":
        monkeypatch.setitem(sys.modules, "accelerate", None)  # import fails: random init, then load
    again = balf.load_pretrained(folder)
    assert type(again) is type(small) and _ranks(again) == _ranks(small)
    torch.testing.assert_close(_out(again), _out(small), rtol=0, atol=0)


def test_an_edited_quantization_config_is_refused_by_name(tmp_path, compressed):
    small, _ = compressed["bert"]
    folder = _save(small, tmp_path / "saved", "model.save_pretrained")
    config = json.loads((folder / "config.json").read_text())
    del config["quantization_config"]["spec"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(balf.SaveFormatError, match="has no factorization spec"):
        transformers.AutoModel.from_pretrained(folder)


def test_save_pretrained_needs_a_transformers_model(tmp_path):
    with pytest.raises(balf.BALFError, match="has no transformers config"):
        balf.save_pretrained(torch.nn.Linear(2, 2), tmp_path)


def test_load_pretrained_needs_a_config(tmp_path):
    with pytest.raises(balf.SaveFormatError, match="has no config.json"):
        balf.load_pretrained(tmp_path)


# -- the class and the device asked for ------------------------------------------------------------


@pytest.mark.parametrize("layout", ["current", "balf 0.2"])
def test_load_pretrained_on_the_meta_device_gives_the_structure_on_meta(
    tmp_path, compressed, layout
):
    """``device="meta"`` used to load on the CPU (balf 0.2 folders) or fail inside transformers
    (``from_pretrained`` refuses meta): now the architecture with its factorized layers."""
    small, _ = compressed["llama"]
    if layout == "current":
        folder = _save(small, tmp_path / "saved", "balf.save_pretrained")
    else:
        folder = _legacy_folder(small, tmp_path / "old")
    again = balf.load_pretrained(folder, device="meta")
    assert type(again) is type(small) and _ranks(again) == _ranks(small)
    assert all(t.is_meta for t in again.parameters())


@pytest.mark.parametrize("layout", ["current", "balf 0.2"])
@pytest.mark.parametrize(
    "model_class, error, message",
    [
        ("BertModel", balf.BALFError, r"'BertModel' builds from a BertConfig.* LlamaConfig"),
        ("AutoModelForImageClassification", balf.BALFError, r"Auto class with no model for Llama"),
        ("not-a-class", TypeError, r"'not-a-class' is not a class"),
    ],
    ids=["another-family", "auto-for-another-task", "not-a-class"],
)
def test_a_model_class_that_cannot_build_the_folder_is_named(
    tmp_path, compressed, layout, model_class, error, message
):
    """A BertModel asked for a Llama folder loaded a random BERT silently (or failed deep inside
    transformers with an AttributeError)."""
    small, _ = compressed["llama"]
    if layout == "current":
        folder = _save(small, tmp_path / "saved", "balf.save_pretrained")
    else:
        folder = _legacy_folder(small, tmp_path / "old")
    with pytest.raises(error, match=message):
        balf.load_pretrained(folder, model_class=getattr(transformers, model_class, model_class))


def test_a_balf_0_2_spec_naming_an_auto_class_builds_the_mapped_class(tmp_path, compressed):
    small, _ = compressed["llama"]
    folder = _legacy_folder(small, tmp_path / "old")
    (folder / "balf_spec.json").write_text(json.dumps({"model_class": "AutoModelForCausalLM"}))
    again = balf.load_pretrained(folder)
    assert type(again) is type(small)
    torch.testing.assert_close(_out(again), _out(small), rtol=0, atol=0)
