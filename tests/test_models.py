"""The model zoo: every architecture builds, runs on the CPU and exports to ONNX; the registry is strict.

Big architectures are marked ``slow`` (run them with ``-m slow``).
"""
import numpy as np
import pytest
import torch

from engines.backends import load_engine
from engines.errors import DfscanError
from engines.export import export_onnx
from engines.models import (create_model, get_model_config, get_model_entry, list_models,
                            register_model)
from engines.models._weights import find_offline_weights

SLOW = {"efficientnet_b3", "efficientnet_b4", "efficientnet_b5", "efficientnet_b6",
        "efficientnet_b7", "vgg16", "inception_resnet_v2", "xception"}
FAST = {"customcnn", "meso4", "mesoinception4", "squeezenet", "mobilenetv2", "efficientnet_lite0",
        "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "resnet18", "resnet50"}
ARCHS = [pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name
         for name in sorted(SLOW | FAST)]

# dfscan name -> the library's own name, whose default pretrained config ours must equal
TIMM_NAMES = {**{f"efficientnet_b{b}": f"efficientnet_b{b}" for b in range(8)},
              "efficientnet_lite0": "tf_efficientnet_lite0",
              "inception_resnet_v2": "inception_resnet_v2", "xception": "legacy_xception"}
TORCHVISION_NAMES = {"mobilenetv2": "mobilenet_v2", "resnet18": "resnet18",
                     "resnet50": "resnet50", "squeezenet": "squeezenet1_1", "vgg16": "vgg16"}


@pytest.fixture(autouse=True)
def _two_threads():
    # the test machines have two cores shared with other jobs
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def _image_batch(config, n=3, seed=0):
    """``n`` uniform-noise images in [0, 1], normalised as the pipeline would for ``config``."""
    h, w = config.input_size
    x = torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))
    mean = torch.tensor(config.mean).view(1, 3, 1, 1)
    std = torch.tensor(config.std).view(1, 3, 1, 1)
    return (x - mean) / std


def _calibrate_batchnorm(model, x):
    """Set BatchNorm running statistics from ``x``.

    Freshly initialised networks give logits that are all ~0 (EfficientNet) or saturate the
    softmax (ResNet-50), so comparing probabilities between runtimes would prove nothing; with
    real statistics the logits are O(1) and a wrong graph shows.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the one batch
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


def test_every_registered_architecture_is_tested():
    assert sorted(SLOW | FAST) == list_models()


def test_duplicate_name_is_rejected():
    def builder(pretrained=None, num_classes=2):
        raise AssertionError("never built")

    with pytest.raises(ValueError, match="already registered"):
        register_model("mobilenetv2")(builder)
    assert get_model_entry("mobilenetv2").builder is not builder  # the first one stays


def test_unknown_name_lists_the_choices():
    with pytest.raises(DfscanError) as err:
        create_model("resnet-50")
    message = str(err.value)
    assert "'resnet-50'" in message
    for name in list_models():
        assert name in message


@pytest.mark.parametrize("name", sorted(TIMM_NAMES))
def test_config_matches_timm_default(name):
    import timm

    library = timm.models.get_pretrained_cfg(TIMM_NAMES[name])
    config = get_model_config(name)
    assert config.input_size == tuple(library.input_size[1:])
    assert config.mean == pytest.approx(library.mean)
    assert config.std == pytest.approx(library.std)
    assert config.paper


@pytest.mark.parametrize("name", sorted(TORCHVISION_NAMES))
def test_config_matches_torchvision_default(name):
    import torchvision

    transforms = torchvision.models.get_model_weights(TORCHVISION_NAMES[name]).DEFAULT.transforms()
    config = get_model_config(name)
    assert config.input_size == (transforms.crop_size[0],) * 2
    assert config.mean == pytest.approx(transforms.mean)
    assert config.std == pytest.approx(transforms.std)
    assert config.paper


@pytest.mark.parametrize("name", ARCHS)
def test_forward_and_onnx_export(name, tmp_path):
    config = get_model_config(name)
    torch.manual_seed(0)
    model = create_model(name, input_size=config.input_size)
    assert not model.training
    x = _image_batch(config)  # batch 3: the export traced batch 2, so the batch axis must be dynamic

    model = _calibrate_batchnorm(model, x)
    with torch.inference_mode():
        logits = model(x)
    assert logits.shape == (3, 2)
    assert torch.isfinite(logits).all()
    expected = logits.numpy()
    engine = load_engine(export_onnx(model, config, tmp_path / f"{name}.onnx"))
    assert engine.name == "onnx"
    assert engine.config == config
    got = engine.infer(x.numpy())
    assert got.shape == (3, 2)
    np.testing.assert_allclose(torch.softmax(torch.from_numpy(got), 1).numpy(),
                               torch.softmax(torch.from_numpy(expected), 1).numpy(), atol=1e-3)
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3 * scale)


@pytest.mark.parametrize("name,params", [("meso4", 27977), ("mesoinception4", 28615)])
def test_mesonet_matches_the_paper(name, params):
    # Afchar et al. give the trainable parameter counts of their one-sigmoid-output networks
    model = create_model(name, num_classes=1)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == params


@pytest.mark.parametrize("name", ["meso4", "mesoinception4"])
def test_mesonet_builds_for_odd_input_sizes(name):
    config = get_model_config(name).with_input_size((203, 141))
    model = create_model(name, input_size=config.input_size)
    with torch.inference_mode():
        logits = model(_image_batch(config, n=1))
    assert logits.shape == (1, 2) and torch.isfinite(logits).all()


def _offline_state(arch, remap=lambda state: state):
    path = find_offline_weights(arch)
    if path is None:
        pytest.skip(f"{arch}: offline weights package not installed "
                    f"({get_model_config(arch).pretrained_hint})")
    return remap(torch.load(path, map_location="cpu", weights_only=True))


def _assert_loaded_except_head(model, state, head_prefix):
    own = model.state_dict()
    head = sorted(k for k in own if k.startswith(head_prefix))
    assert head, "the head should be present"
    for key, tensor in own.items():
        if key in head:
            assert tensor.shape[0] == 2
            continue
        assert key in state, f"{key} has no counterpart in the weights file"
        assert torch.equal(tensor, state[key]), key


def test_mobilenetv2_auto_loads_offline_imagenet_weights():
    state = _offline_state("mobilenetv2")
    model = create_model("mobilenetv2", pretrained="auto")
    _assert_loaded_except_head(model, state, "classifier.1.")
    assert len(state) == len(model.state_dict())


def test_efficientnet_lite0_auto_loads_offline_imagenet_weights():
    from engines.models.timm_zoo import lite0_from_efficientnet_pytorch

    state = _offline_state("efficientnet_lite0", lite0_from_efficientnet_pytorch)
    model = create_model("efficientnet_lite0", pretrained="auto")
    _assert_loaded_except_head(model, state, "classifier.")
    assert set(state) == set(model.state_dict())
    with torch.inference_mode():
        assert torch.isfinite(model(_image_batch(get_model_config("efficientnet_lite0"), n=1))).all()


def test_pretrained_none_and_missing_file():
    create_model("squeezenet", pretrained="none")
    with pytest.raises(DfscanError, match="not found"):
        create_model("resnet18", pretrained="/nonexistent/resnet18.pth")


@pytest.mark.parametrize("arch", ["mobilenetv2", "efficientnet_lite0", "resnet18", "squeezenet", "meso4"])
def test_pretrained_dfscan_checkpoint_keeps_its_trained_head(tmp_path, arch):
    """--pretrained with a dfscan checkpoint (fine-tuning) starts from every one of its tensors,
    the 2-class head included: a fresh random head would throw the training away."""
    from engines.checkpoint import save_checkpoint

    trained = create_model(arch, pretrained="none")
    with torch.no_grad():
        for tensor in trained.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(0.5)  # unlike any fresh initialisation
    path = save_checkpoint(tmp_path / "model.pt", trained, get_model_config(arch))
    tuned = create_model(arch, pretrained=str(path))
    for key, tensor in trained.state_dict().items():
        assert torch.equal(tuned.state_dict()[key], tensor), key
