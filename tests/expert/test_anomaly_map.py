import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from scipy.ndimage import gaussian_filter
from threadpoolctl import ThreadpoolController

from eagle_cli.expert.anomaly_map import frame_map, observed_box, to_original_frame
from eagle_cli.expert.geometry import Geometry


def test_frame_map_is_bilinear_upsampling_then_sigma_4():
    scores = np.random.default_rng(0).random(28 * 28).astype(np.float32)
    amap = frame_map(scores, (28, 28), Geometry(256, 224))
    up = torch.nn.functional.interpolate(torch.from_numpy(scores).reshape(1, 1, 28, 28), size=(224, 224),
                                         mode="bilinear", align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(amap, gaussian_filter(up, sigma=4), rtol=1e-6)
    assert amap.shape == (224, 224) and amap.dtype == np.float32


def test_original_frame_map_lands_where_the_crop_saw_it():
    # A 400x300 image: resized to 341x256, centre crop 224 starts at (58, 16) in the resized frame.
    geometry = Geometry(256, 224)
    amap = np.zeros((224, 224), np.float32)
    amap[100:120, 50:70] = 1.0  # a hot square in the crop frame
    original = to_original_frame(amap, geometry, 400, 300)
    assert original.shape == (300, 400)
    scale = 300 / 256
    ys, xs = np.nonzero(original > 0.5)
    assert abs(ys.mean() - (16 + 110) * scale) < 2 and abs(xs.mean() - (58 + 60) * scale) < 2
    x0, y0, x1, y1 = observed_box(geometry, 400, 300)
    assert original[:, : int(x0) - 1].max() == 0 and original[:, int(np.ceil(x1)) + 1:].max() == 0
    assert np.allclose((x0, y0), (58 * 400 / 341, 16 * scale))


def test_original_frame_inside_the_crop_keeps_values_to_its_edges():
    geometry = Geometry(256, 224)
    original = to_original_frame(np.full((224, 224), 3.0, np.float32), geometry, 256, 256)
    assert np.allclose(original[16:240, 16:240], 3.0) and original[:16].max() == 0 and original[:, 240:].max() == 0


def test_the_full_frame_sees_the_whole_image_and_maps_it_back_without_a_blind_strip():
    geometry = Geometry(resize=64, crop=0)
    assert geometry.frame == 64 and geometry.resized_size(300, 200) == (64, 64)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8))
    tensor = torch.from_numpy(geometry.to_array(image))
    assert tensor.shape == (3, 64, 64)
    assert observed_box(geometry, 300, 200) == (0.0, 0.0, 300.0, 200.0)
    amap = np.ones((64, 64), dtype=np.float32)
    original = to_original_frame(amap, geometry, 300, 200)
    assert original.shape == (200, 300) and np.allclose(original, 1, atol=1e-5)  # no zero strip, as a crop leaves
    assert (to_original_frame(amap, Geometry(resize=64, crop=48), 300, 200) == 0).any()
    mask = np.zeros((200, 300), dtype=bool)
    mask[:10, :10] = True  # a defect in the corner, which a centre crop cuts away
    assert geometry.crop_mask(mask)[:3, :2].all() and not Geometry(64, 48).crop_mask(mask).any()


@pytest.mark.parametrize("geometry", [Geometry(256, 224), Geometry(64, 0), Geometry(300, 0, 224, 0.1)])
@pytest.mark.parametrize("size", [(300, 200), (200, 300), (1024, 777), (300, 300)])
def test_maps_and_masks_come_back_as_torch_samples_them(geometry, size):
    """The numpy resampling (no torch at run time, for the exported runtime) is torch's grid_sample and nearest
    resize, which the maps and masks were first drawn with."""
    width, height = size
    amap = np.random.default_rng(0).random((geometry.frame, geometry.frame)).astype(np.float32)
    rw, rh = geometry.resized_size(width, height)
    left, top = geometry.crop_offset(width, height)
    xs = ((torch.arange(width, dtype=torch.float64) + 0.5) * rw / width - left) / geometry.frame * 2 - 1
    ys = ((torch.arange(height, dtype=torch.float64) + 0.5) * rh / height - top) / geometry.frame * 2 - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)[None].float()
    sampled = torch.nn.functional.grid_sample(torch.from_numpy(amap)[None, None], grid, mode="bilinear",
                                              padding_mode="border", align_corners=False)[0, 0]
    inside = (xs.abs() <= 1)[None, :] & (ys.abs() <= 1)[:, None]
    np.testing.assert_allclose(to_original_frame(amap, geometry, width, height),
                               sampled.masked_fill(~inside, 0).numpy(), atol=1e-4)  # torch: float32 grid

    mask = np.random.default_rng(1).random((height, width)) > 0.7
    resized = TF.resize(torch.from_numpy(mask)[None].to(torch.uint8), [rh, rw],
                        interpolation=TF.InterpolationMode.NEAREST)
    np.testing.assert_array_equal(geometry.crop_mask(mask), TF.center_crop(resized, geometry.frame)[0].bool().numpy())


def test_a_map_leaves_the_blas_threads_as_it_found_them():
    # The map's products run on one thread (numpy's BLAS workers would spin on after them, taking a core from the
    # backbone and the search); the caller's setting comes back afterwards.
    blas = ThreadpoolController().select(user_api="blas")
    with blas.limit(limits=2):
        frame_map(np.random.default_rng(0).random(4 * 28 * 28), (28, 28), Geometry(256, 0, tile=224, overlap=0.1))
        assert {lib["num_threads"] for lib in blas.info()} == {2}
