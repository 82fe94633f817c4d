"""Training-time appearance augmentation: every task's list runs on samples of the trainers' shapes,
is deterministic with set_random_state, changes the images, and leaves non-image channels alone."""

import pytest
import torch
from monai.transforms import Compose

from lib.transforms.augment import RANGES, augmentations, grouped

CLOT_INPUTS = ("cta1", "cta2", "cta3", "spiral", "cta1_mirror", "coord_lr", "coord_ap", "coord_si")
CASES = {
    "ischemic_lesion/mri": (("ischemic_lesion",), {"route": "mri"}, 4),
    "ischemic_lesion/siamese": (("ischemic_lesion",), {"route": "siamese"}, 2),
    "ischemic_lesion/ctp": (("ischemic_lesion",), {"route": "ctp"}, 4),
    "core_penumbra": (("core_penumbra",), {"maps": ("cbf", "cbv", "mtt", "tmax", "rcbf")}, 6),
    "clot_region": (("clot_region",), {"input_names": CLOT_INPUTS, "context_slices": 2}, 40),
}


def run(name, spatial, seed, n=6):
    (task,), kwargs, channels = CASES[name]
    shape = (channels, 48, 48) if spatial == 2 else (channels, 24, 24, 8)
    image = torch.rand(shape, generator=torch.Generator().manual_seed(0)) + 0.2
    label = torch.zeros((1, *shape[1:]))
    chain = Compose(augmentations(task, spatial_dims=spatial, **kwargs))
    chain.set_random_state(seed)
    outs = [chain({"image": image.clone(), "label": label}) for _ in range(n)]
    return image, outs


@pytest.mark.golden
@pytest.mark.parametrize("spatial", [2, 3])
@pytest.mark.parametrize("name", list(CASES))
def test_each_list_runs_on_the_trainers_shapes_and_is_deterministic(one_torch_thread, name, spatial):
    image, first = run(name, spatial, seed=5)
    _, again = run(name, spatial, seed=5)
    _, other = run(name, spatial, seed=6)
    for a, b in zip(first, again):
        assert set(a) == {"image", "label"}  # the channel groups are gone again
        assert tuple(a["image"].shape) == tuple(image.shape)
        assert torch.equal(torch.as_tensor(a["image"]), torch.as_tensor(b["image"]))
    assert any(not torch.allclose(torch.as_tensor(o["image"]), image) for o in first)  # it augments
    assert any(not torch.equal(torch.as_tensor(a["image"]), torch.as_tensor(b["image"])) for a, b in zip(first, other))


def test_channels_that_are_not_images_are_never_touched(one_torch_thread):
    image, outs = run("core_penumbra", 2, seed=1, n=8)
    assert all(torch.equal(torch.as_tensor(o["image"])[-1], image[-1]) for o in outs)  # NIHSS
    image, outs = run("clot_region", 2, seed=1, n=8)
    assert all(torch.equal(torch.as_tensor(o["image"])[25:], image[25:]) for o in outs)  # head coordinates


def test_the_ctp_route_scales_cbf_and_cbv_together(one_torch_thread):
    image = torch.ones((4, 16, 16))
    chain = Compose(augmentations("ischemic_lesion", route="ctp"))
    for seed in range(12):
        chain.set_random_state(seed)
        out = torch.as_tensor(chain({"image": image.clone()})["image"])
        noisy = out.std(dim=(1, 2)) > 1e-6
        if not noisy[0] and not noisy[1]:  # no noise drawn on the flow group: one calibration factor
            assert torch.allclose(out[0], out[1])


def test_grouping_refuses_overlapping_channels_and_ranges_are_documented():
    with pytest.raises(ValueError, match="overlap"):
        grouped({"a": [0, 1], "b": [1]}, 3, [])
    assert all(isinstance(v, tuple) and len(v) == 2 for v in RANGES.values())
    with pytest.raises(ValueError, match="route"):
        augmentations("ischemic_lesion", route="pet")
