"""The architecture JSON contract, the search space and the builder."""
import json
import random
import re
import subprocess
import sys

import pytest
import torch

from nano_agent.arch import Architecture, ArchitectureError, as_architecture
from nano_agent.builder import build_model
from nano_agent.complexity import complexity
from nano_agent.space import SearchSpace

pytestmark = pytest.mark.unit

ROOT = __file__.rsplit("/tests/", 1)[0]


def random_arch(space, seed):
    rng = random.Random(seed)
    return space.architecture([rng.randrange(len(b.ops)) for b in space.blocks])


def test_space_has_twenty_blocks_and_zero_only_where_shapes_allow():
    space = SearchSpace()
    assert len(space.blocks) == 20
    for b in space.blocks:
        names = [op.name for op in b.ops]
        assert names[:6] == ["k3_e3", "k3_e6", "k5_e3", "k5_e6", "k7_e3", "k7_e6"]
        assert ("zero" in names) == (b.stride == 1 and b.in_channels == b.out_channels)
    # the first block of each of the five stages changes stride or channels: 5 x 6 x 15 x 7
    assert space.size == 6 ** 5 * 7 ** 15 < 7 ** 20


@pytest.mark.process
def test_space_command_prints_the_exact_size():
    out = subprocess.run([sys.executable, "-m", "search_core", "space"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert str(6 ** 5 * 7 ** 15) in out
    assert out.count("block ") == 20


def test_mobilenet_v2_builds_like_torchvision():
    """Reference figures of torchvision's mobilenet_v2 (224x224, 1000 classes)."""
    arch = SearchSpace().mobilenet_v2()
    model = build_model(arch)
    state = model.state_dict()
    assert sum(p.numel() for p in model.parameters()) == 3504872
    assert len(state) == 314
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) == 52
    assert state["features.1.conv.0.0.weight"].shape == (32, 1, 3, 3)
    assert state["features.2.conv.0.0.weight"].shape == (96, 16, 1, 1)
    assert state["features.17.conv.2.weight"].shape == (320, 960, 1, 1)
    assert state["features.18.0.weight"].shape == (1280, 320, 1, 1)
    assert state["classifier.1.weight"].shape == (1000, 1280)
    model.eval()
    x = torch.randn(1, 3, 224, 224)
    assert model.features(x).shape == (1, 1280, 7, 7)
    assert model(x).shape == (1, 1000)
    assert complexity(arch).macs == 300774272  # torchvision: 0.30 GFLOPS (multiply-adds)


def test_mobilenet_v2_is_a_member_of_the_space():
    space = SearchSpace()
    arch = space.mobilenet_v2()
    choices = space.choices(arch)
    assert [space.blocks[i].ops[c].name for i, c in enumerate(choices)].count("zero") == 5
    assert space.architecture(choices) == arch


@pytest.mark.process
@pytest.mark.parametrize("seed", range(5))
def test_json_round_trip_is_exact_and_hash_is_stable(seed):
    arch = random_arch(SearchSpace(0.5, 32, 10, 1), seed)
    text = arch.to_json()
    again = Architecture.from_json(text)
    assert again == arch and again.hash == arch.hash and again.to_json() == text
    # canonical: key order in the input does not matter
    shuffled = json.dumps(dict(reversed(list(arch.to_dict().items()))))
    assert Architecture.from_json(shuffled).hash == arch.hash
    # hash is the same in another process
    code = "from nano_agent.arch import Architecture; import sys; " \
           "print(Architecture.from_json(sys.stdin.read()).hash)"
    out = subprocess.run([sys.executable, "-c", code], input=text, cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == arch.hash


def test_different_architectures_have_different_hashes():
    space = SearchSpace(0.5, 32, 10, 1)
    archs = {random_arch(space, s) for s in range(50)}
    assert len({a.hash for a in archs}) == len(archs) > 40


@pytest.mark.parametrize("space", [SearchSpace(), SearchSpace(0.5, 32, 10, 1),
                                   SearchSpace(1.4, 96, 7, 3)])
def test_builder_and_complexity_agree(space):
    for seed in range(4):
        arch = random_arch(space, seed)
        model = build_model(arch.to_dict())  # the builder takes the JSON dict as well
        macs = []

        def count(module, inputs, out):
            if isinstance(module, torch.nn.Conv2d):
                macs.append(module.weight.numel() * out.shape[2] * out.shape[3])
            elif isinstance(module, torch.nn.Linear):
                macs.append(module.weight.numel())
        for m in model.modules():
            m.register_forward_hook(count)
        model.eval()
        with torch.no_grad():
            assert model(torch.randn(arch.input_shape)).shape == (1, arch.num_classes)
        cost = complexity(arch)
        assert cost.params == sum(p.numel() for p in model.parameters())
        assert cost.macs == sum(macs)


def _broken(mutate):
    d = SearchSpace(0.5, 32, 10, 1).mobilenet_v2().to_dict()
    mutate(d)
    return d


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["blocks"][3].update(op="conv9"), "unknown op 'conv9'"),
    (lambda d: d["blocks"][2].update(kernel=4), "kernel must be one of"),
    (lambda d: d["blocks"][2].update(kernel=3.0), "kernel must be one of"),
    (lambda d: d["blocks"][2].update(expand=5), "expand must be one of"),
    (lambda d: d["blocks"][3].update(in_channels=17), "channel mismatch"),
    (lambda d: d["blocks"][2].update(stride=3), "stride must be 1 or 2"),
    (lambda d: d["blocks"][1].update(op="zero", kernel=None), "zero block has no kernel"),
    (lambda d: d["blocks"].__setitem__(1, {"op": "zero", "in_channels": 8, "out_channels": 16,
                                           "stride": 2, "searchable": True}), "must keep the shape"),
    (lambda d: d["input"].update(resolution=100000), "out of bounds"),
    (lambda d: d.update(num_classes=0), "out of bounds"),
    (lambda d: d.update(num_classes=True), "must be an integer"),
    (lambda d: d["blocks"].extend(d["blocks"][-1:] * 70), "maximum of 64"),
    (lambda d: d.update(version=2), "version 2 is not supported"),
    (lambda d: d.update(format="something"), "not an architecture file"),
    (lambda d: d["blocks"][2].update(kernal=3), "unknown key(s) 'kernal'"),
    (lambda d: d.pop("head"), "missing 'head'"),
    (lambda d: d["classifier"].update(dropout=1.5), "dropout"),
])
def test_validation_gives_clear_errors(mutate, message):
    with pytest.raises(ArchitectureError, match=re.escape(message)):
        Architecture.from_dict(_broken(mutate))


def test_invalid_json_text_is_a_clear_error():
    with pytest.raises(ArchitectureError, match="not valid JSON"):
        as_architecture("{not json")
    with pytest.raises(ArchitectureError, match="expected an architecture"):
        as_architecture(42)


def test_architecture_is_immutable():
    arch = SearchSpace(0.5, 32, 10, 1).mobilenet_v2()
    with pytest.raises(AttributeError):
        arch.num_classes = 3
    with pytest.raises(AttributeError):
        arch.blocks[0].kernel = 7
    d = arch.to_dict()
    d["blocks"][3]["kernel"] = 7
    assert arch.to_dict() != d  # to_dict hands out a copy, not the object's state
