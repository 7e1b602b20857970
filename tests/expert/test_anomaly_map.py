import numpy as np
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter

from eagle_cli.expert.anomaly_map import frame_map, observed_box, to_original_frame
from eagle_cli.expert.features import Geometry


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
    tensor = geometry.to_tensor(image)
    assert tensor.shape == (3, 64, 64)
    assert observed_box(geometry, 300, 200) == (0.0, 0.0, 300.0, 200.0)
    amap = np.ones((64, 64), dtype=np.float32)
    original = to_original_frame(amap, geometry, 300, 200)
    assert original.shape == (200, 300) and np.allclose(original, 1, atol=1e-5)  # no zero strip, as a crop leaves
    assert (to_original_frame(amap, Geometry(resize=64, crop=48), 300, 200) == 0).any()
    mask = torch.zeros(200, 300, dtype=torch.bool)
    mask[:10, :10] = True  # a defect in the corner, which a centre crop cuts away
    assert geometry.crop_mask(mask)[:3, :2].all() and not Geometry(64, 48).crop_mask(mask).any()
