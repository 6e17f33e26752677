"""From an architecture (and its trained weights) to an ONNX file that runs where it will be deployed.

The agent's exporter (nano_agent.onnx_backend: opset 13, which JetPack 4.6's TensorRT 8.0 reads),
with a dynamic batch axis. The architecture JSON travels inside the file as metadata
(`edge-nas.architecture`), so a deployed model always says what it is.
"""
import torch

from nano_agent.arch import Architecture
from nano_agent.builder import build_model
from nano_agent.onnx_backend import export

ARCH_KEY, HASH_KEY = "edge-nas.architecture", "edge-nas.arch_hash"


class WeightsMismatch(ValueError):
    """The weights were not trained for this architecture (or are not a state_dict at all)."""


def load_weights(model, path):
    """Load the state_dict at `path` into `model` (weights only: no pickled code runs)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  torch raises many kinds for a file that is not weights
        raise WeightsMismatch("{} is not a saved state_dict: {}".format(path, e)) from None
    if not isinstance(state, dict):
        raise WeightsMismatch("{} holds a {}, not a state_dict".format(path, type(state).__name__))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshapen = sorted(k for k in set(expected) & set(state)
                       if not isinstance(state[k], torch.Tensor) or state[k].shape != expected[k].shape)
    if missing or unexpected or misshapen:
        parts = ["{} {} (e.g. {})".format(len(keys), what, keys[0])
                 for what, keys in (("missing", missing), ("unexpected", unexpected),
                                    ("of another shape", misshapen)) if keys]
        raise WeightsMismatch("the weights in {} do not fit this architecture: {}".format(
            path, "; ".join(parts)))
    model.load_state_dict(state)


def export_onnx(arch, out, weights=None):
    """Write `arch` (with the state_dict at `weights`, else random weights) to `out` as ONNX."""
    arch = arch if isinstance(arch, Architecture) else Architecture.from_dict(arch)
    model = build_model(arch)
    if weights:
        load_weights(model, weights)
    return export_model(model, arch, out)


def export_model(model, arch, out):
    """Write `model`, built from `arch` (trained or not), to `out` as ONNX with its metadata."""
    import onnx  # here: the search itself never needs it

    export(model.eval(), arch.input_shape, out, dynamic_batch=True)
    proto = onnx.load(out)
    for key, value in ((ARCH_KEY, arch.to_json()), (HASH_KEY, arch.hash)):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "edge-nas"
    onnx.checker.check_model(proto)
    onnx.save(proto, out)
    return out


def architecture_of(path):
    """The architecture an exported file carries."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    if ARCH_KEY not in meta:
        raise ValueError("{} was not exported by edge-nas (no {} metadata)".format(path, ARCH_KEY))
    return Architecture.from_json(meta[ARCH_KEY])
