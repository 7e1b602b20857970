"""Tiles: where they lie in the frame, what the backbone sees of each, and how their maps are stitched."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from eagle_cli.errors import ParameterError
from eagle_cli.expert.anomaly_map import frame_map
from eagle_cli.expert.features import PatchFeatureExtractor
from eagle_cli.expert.geometry import Geometry
from eagle_cli.params import ExtractParams
from eagle_cli.settings import build, identity


@pytest.mark.parametrize(("frame", "tile", "overlap"), [(512, 256, 0.25), (1000, 224, 0.1), (96, 48, 0.5),
                                                         (300, 300, 0.25), (257, 128, 0.0)])
def test_tiles_cover_the_frame_overlap_at_least_as_asked_and_stay_inside(frame, tile, overlap):
    geometry = Geometry(resize=frame, crop=0, tile=tile, overlap=overlap)
    offsets = geometry.tile_offsets()
    starts = sorted({left for _, left in offsets})
    assert offsets == [(top, left) for top in starts for left in starts]  # row by row
    assert starts[0] == 0 and starts[-1] == frame - tile
    steps = np.diff(starts)
    assert (steps <= tile * (1 - overlap)).all() and (steps > 0).all()
    covered = np.zeros((frame, frame), bool)
    for top, left in offsets:
        covered[top:top + tile, left:left + tile] = True
    assert covered.all()


def test_without_tiles_the_frame_is_one_tile():
    geometry = Geometry(256, 224)
    frames = torch.randn(2, 3, 224, 224)
    assert geometry.tile_offsets() == [(0, 0)] and geometry.tiles(frames) is frames
    assert geometry.images_per_batch(8) == 8 and Geometry(512, 0, 128, 0.0).images_per_batch(8) == 1


def test_tiles_are_the_frame_cut_image_after_image():
    geometry = Geometry(resize=64, crop=0, tile=32, overlap=0.5)  # 3 x 3 tiles at 0, 16, 32
    frames = torch.randn(2, 3, 64, 64)
    tiles = geometry.tiles(frames)
    assert tiles.shape == (2 * 9, 3, 32, 32)
    assert torch.equal(tiles[9 + 5], frames[1, :, 16:48, 32:64])  # image 1, tile row 1, column 2


def test_each_tile_goes_through_the_backbone_alone():
    params = ExtractParams(backbone="mobilenet_v2", weights="none", resize=96, crop=0, tile=48, overlap=0.5,
                           batch_size=4, device="cpu")
    tiled = PatchFeatureExtractor.from_params(params)
    plain = PatchFeatureExtractor.from_params(replace(params, resize=48, tile=0))
    plain.model = tiled.model  # random weights: the same ones
    frames = torch.randn(2, 3, 96, 96)
    features = tiled(frames)  # 18 tiles in forwards of 4
    assert tiled.grid() == (6, 6) and features.shape == (2, 9 * 36, 32 + 96)
    alone = plain(frames[1:, :, 24:72, 48:96])  # image 1, tile row 1, column 2
    torch.testing.assert_close(features[1, 5 * 36:6 * 36], alone[0], atol=1e-5, rtol=1e-5)
    assert (tiled.lineage.tile, tiled.lineage.overlap) == (48, 0.5)
    assert (plain.lineage.tile, plain.lineage.overlap) == (0, 0)


def test_tile_maps_are_stitched_in_place_and_overlaps_averaged():
    geometry = Geometry(resize=64, crop=0, tile=32, overlap=0.5)  # tiles start at 0, 16, 32
    scores = np.zeros((9, 4, 4), np.float32)
    scores[0] = 2.0  # the top-left tile says 2 everywhere, the others 0
    amap = frame_map(scores.ravel(), (4, 4), geometry, sigma_px=0)
    assert amap.shape == (64, 64)
    assert np.allclose(amap[:16, :16], 2.0)  # only tile 0 covers it
    assert np.allclose(amap[16:32, :16], 1.0)  # tiles 0 and 3: the mean
    assert np.allclose(amap[16:32, 16:32], 0.5)  # tiles 0, 1, 3, 4
    assert np.allclose(amap[32:, 32:], 0.0)
    smoothed = frame_map(scores.ravel(), (4, 4), geometry, sigma_px=4)
    np.testing.assert_allclose(smoothed, gaussian_filter(amap, sigma=4), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("settings", "message"), [
    ({"resize": 256, "crop": 224, "tile": 256}, "larger than the 224 px frame"),
    ({"resize": 256, "crop": 0, "tile": 300}, "larger than the 256 px frame"),
    ({"resize": 256, "crop": 0, "tile": 128, "overlap": 1.0}, "in [0, 1)"),
    ({"resize": 256, "crop": 0, "tile": 128, "overlap": -0.1}, "in [0, 1)"),
])
def test_impossible_tiles_are_refused_with_what_to_change(settings, message):
    with pytest.raises(ParameterError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        ExtractParams(**settings)


def test_the_overlap_of_untiled_settings_is_no_part_of_their_identity_and_tiled_ones_round_trip():
    assert identity(ExtractParams(overlap=0.5)) == identity(ExtractParams()) and "overlap" not in identity(
        ExtractParams())
    tiled = ExtractParams(resize=512, crop=0, tile=256, overlap=0.5)
    assert identity(tiled)["overlap"] == 0.5 and build(ExtractParams, identity(tiled)) == tiled


@pytest.mark.parametrize(("side", "expected"), [
    (300, (256, 224, 0)),  # under twice the backbone's input: as --resize and --crop say, untiled
    (448, (448, 0, 224)),  # the whole image at its own resolution, in tiles of the input
    (1024, (1024, 0, 224)),
    (6000, (2048, 0, 224)),  # resized to the largest side auto tiling sees
])
def test_auto_tiling_follows_the_image_size_and_the_backbones_input(side, expected):
    from eagle_cli.expert.features import AUTO_OVERLAP, resolve_tiling

    resolved = resolve_tiling(ExtractParams(backbone="mobilenet_v2"), side)
    assert (resolved.resize, resolved.crop, resolved.tile) == expected
    assert resolved.overlap == (AUTO_OVERLAP if resolved.tile else ExtractParams().overlap)


def test_chosen_tiling_is_kept_and_auto_is_the_default():
    from eagle_cli.expert.features import resolve_tiling

    chosen = ExtractParams(resize=512, crop=0, tile=256, overlap=0.25)
    assert resolve_tiling(chosen, 4000) is chosen
    assert ExtractParams().tile == "auto"
    assert identity(build(ExtractParams, {"tile": "auto"}))["tile"] == "auto"
    assert build(ExtractParams, {"tile": "96", "resize": 96, "crop": 0}).tile == 96
