"""ONNX export (search_core/export.py, `python -m search_core export`): the exported model computes
what the torch model does, in onnxruntime, for members with skipped blocks at several resolutions;
it carries its architecture; weights that do not fit are refused with a message."""
import json
import random
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from nano_agent.builder import build_model
from nano_agent.space import SearchSpace
from nano_agent.onnx_backend import OPSET
from search_core.export import WeightsMismatch, architecture_of, export_onnx, load_weights

from processes import ROOT

pytestmark = pytest.mark.unit


def random_member(space, seed):
    """A random member of `space` that skips every block it may (the zero op), half of them."""
    rng = random.Random(seed)
    return space.architecture([
        "zero" if any(op.is_zero for op in sb.ops) and rng.random() < 0.5
        else rng.choice([op.name for op in sb.ops if not op.is_zero]) for sb in space.blocks])


def scrambled(model, arch, seed):
    """`model` with random batch-norm scales and shifts, a classifier that is not near zero, and
    batch-norm statistics from random batches: a fresh model's output hardly depends on its input,
    which would hide a wrong export."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=generator)
                m.bias.uniform_(-0.2, 0.2, generator=generator)
                m.reset_running_stats()
                m.momentum = None  # the statistics: the plain mean over the batches below
            elif isinstance(m, torch.nn.Linear):
                m.weight.normal_(0, 0.01, generator=generator)  # logits of order 1
        model.train()
        for _ in range(3):
            model(torch.randn((8,) + tuple(arch.input_shape[1:]), generator=generator))
    return model.eval()


def run_onnx(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x.numpy()})[0]


@pytest.mark.parametrize("seed, resolution, channels", [(0, 32, 1), (1, 64, 3), (2, 96, 3)])
def test_the_exported_model_computes_what_torch_does(tmp_path, seed, resolution, channels):
    space = SearchSpace(0.5, resolution, 10, channels)
    arch = random_member(space, seed)
    assert any(b.op == "zero" for b in arch.blocks)
    model = scrambled(build_model(arch), arch, seed)
    weights = tmp_path / "weights.pt"
    torch.save(model.state_dict(), weights)
    path = export_onnx(arch, str(tmp_path / "model.onnx"), str(weights))
    proto = onnx.load(path)
    assert proto.opset_import[0].version == OPSET  # what TensorRT 8.0 (JetPack 4.6) reads
    x = torch.randn(2, channels, resolution, resolution)  # batch 2: the batch axis is dynamic
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.abs(expected[0] - expected[1]).max() > 0.02  # the input matters
    assert np.abs(run_onnx(path, x) - expected).max() <= 1e-4
    assert architecture_of(path) == arch and architecture_of(path).hash == arch.hash


def test_weights_that_do_not_fit_are_refused(tmp_path):
    small, other = SearchSpace(0.5, 32, 10, 1), SearchSpace(1.0, 32, 10, 1)
    wrong = tmp_path / "other.pt"
    torch.save(build_model(other.mobilenet_v2()).state_dict(), wrong)
    with pytest.raises(WeightsMismatch, match="do not fit this architecture: .*of another shape"):
        load_weights(build_model(small.mobilenet_v2()), str(wrong))
    pruned = tmp_path / "pruned.pt"
    torch.save({k: v for k, v in build_model(small.mobilenet_v2()).state_dict().items()
                if "classifier" not in k}, pruned)
    with pytest.raises(WeightsMismatch, match="missing"):
        load_weights(build_model(small.mobilenet_v2()), str(pruned))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsMismatch, match="not a saved state_dict"):
        load_weights(build_model(small.mobilenet_v2()), str(junk))


@pytest.mark.process
def test_the_cli_exports_a_trained_model(tmp_path):
    arch_path, weights, out = tmp_path / "arch.json", tmp_path / "w.pt", tmp_path / "model.onnx"
    arch = random_member(SearchSpace(0.5, 32, 10, 1), 3)
    arch_path.write_text(arch.to_json())
    train = subprocess.run([sys.executable, "-m", "search_core", "train", str(arch_path), "--epochs",
                            "1", "--limit", "64", "--threads", "1", "--save", str(weights), "--json"],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stderr
    done = subprocess.run([sys.executable, "-m", "search_core", "export", str(arch_path), "--weights",
                           str(weights), "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert "opset 13" in done.stdout and architecture_of(str(out)) == arch
    model = build_model(arch).eval()
    model.load_state_dict(torch.load(weights, weights_only=True))
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        assert np.abs(run_onnx(out, x) - model(x).numpy()).max() <= 1e-4
    bad = subprocess.run([sys.executable, "-m", "search_core", "export", str(arch_path), "--weights",
                          str(arch_path), "--out", str(tmp_path / "bad.onnx")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr
    assert json.loads(train.stdout)["arch_hash"] == arch.hash
