import numpy as np
from PIL import Image

from eagle_cli import load_expert
from eagle_cli.formats.scores import read_scores
from eagle_cli.params import BoxParams
from eagle_cli.prompts.boxes import find_boxes
from eagle_cli.prompts.render import draw_boxes, heatmap_overlay, line_width


def _map():
    amap = np.zeros((200, 300), np.float32)
    amap[20:40, 30:60] = 10.0   # strong region
    amap[150:170, 200:240] = 8.0  # second region
    amap[100:102, 100:102] = 9.0  # 4 px: below the minimum area (0.1 % of 60,000 = 60 px)
    return amap


def test_boxes_come_from_regions_above_a_fraction_of_tau_sorted_by_peak():
    boxes = find_boxes(_map(), tau=9.0)
    assert [b for b, _ in boxes] == [[30, 20, 60, 40], [200, 150, 240, 170]]
    assert [p for _, p in boxes] == [10.0, 8.0]


def test_a_map_below_the_level_gets_no_box_however_it_is_shaped():
    # The reference normalised by each image's own maximum, so every image got boxes.
    assert find_boxes(_map() * 0.5, tau=20.0) == []


def test_close_boxes_merge_and_top_k_limits():
    amap = np.zeros((100, 100), np.float32)
    amap[10:20, 10:20] = 5
    amap[10:20, 25:35] = 4  # centres 15 px apart: merged
    amap[70:80, 70:80] = 3
    boxes = find_boxes(amap, tau=3.0, params=BoxParams(top_k=1))
    assert boxes == [([10, 10, 35, 20], 5.0)]
    assert len(find_boxes(amap, tau=3.0)) == 2


def test_box_outline_scales_with_the_image_and_is_red():
    assert line_width((100, 80)) == 2 and line_width((1024, 1024)) == 7
    image = draw_boxes(Image.new("RGB", (600, 400), (0, 0, 0)), [[100, 100, 200, 150]])
    pixels = np.asarray(image)
    assert tuple(pixels[100, 150]) == (255, 0, 0) and tuple(pixels[125, 150]) == (0, 0, 0)
    assert tuple(pixels[102, 150]) == (255, 0, 0) and tuple(pixels[103, 150]) == (0, 0, 0)  # 3 px at 400 px


def test_heatmap_is_red_where_the_map_reaches_tau():
    amap = np.zeros((10, 10), np.float32)
    amap[:, 5:] = 2.0
    out = np.asarray(heatmap_overlay(Image.new("RGB", (10, 10), (128, 128, 128)), amap, vmax=2.0)).astype(int)
    assert out[0, 9, 0] > out[0, 9, 2] and out[0, 0, 2] > out[0, 0, 0]


def test_a_defect_the_expert_never_saw_gives_no_score_no_box_and_is_greyed_not_blue(washer_scores):
    expert = load_expert(washer_scores.input("threshold"))
    row = next(r for r in read_scores(washer_scores) if r.label == 0)
    clean = Image.open(row.path).convert("RGB")
    marked = np.asarray(clean).copy()
    marked[:7, :7] = (255, 0, 0)  # a glaring mark in the corner strip the 96 → 80 crop cuts away (8 px)
    before, after = expert.score([clean]), expert.score([Image.fromarray(marked)])
    assert after.scores[0] == before.scores[0]  # nothing outside the field of view counts
    assert (after.maps[0][:8, :8] == 0).all()
    assert not [box for box, _ in find_boxes(after.maps[0], expert.tau * 1e-6) if box[0] < 8 and box[1] < 8]
    x0, y0, x1, y1 = row.observed_box
    assert (x0, y0) == (8.0, 8.0)
    overlay = np.asarray(heatmap_overlay(Image.fromarray(marked), after.maps[0], vmax=expert.tau,
                                         seen=tuple(row.observed_box))).astype(int)
    corner = overlay[:8, :8].reshape(-1, 3)
    assert (np.abs(corner[:, 0] - corner[:, 2]) <= 1).all()  # grey (or hatch), no jet colour
    inside = overlay[40, 40]
    assert abs(inside[0] - inside[2]) > 10  # the map's colour where the expert looked
