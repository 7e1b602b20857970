"""Every odd image a plant produces decodes to 8-bit RGB or fails with the file named."""

import numpy as np
import pytest
from PIL import Image

from eagle_cli.data.images import decode, load_mask
from eagle_cli.errors import ImageError


def test_truncated_file_is_named(tmp_path):
    good = tmp_path / "ok.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    broken = tmp_path / "broken.png"
    broken.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ImageError, match="broken.png.*truncated or damaged"):
        decode(broken)


def test_non_image_file_is_named(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    with pytest.raises(ImageError, match="notes.png"):
        decode(path)


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P"])
def test_modes_become_rgb(tmp_path, mode):
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    Image.new("RGB", (40, 30), (200, 100, 50)).convert(mode).save(path)
    image = decode(path)
    assert image.mode == "RGB" and image.size == (40, 30)


def test_16_bit_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    array = np.full((20, 20), 40000, dtype=np.uint16)
    array[:10] = 10000
    Image.fromarray(array).save(path)
    pixels = np.asarray(decode(path))
    assert pixels[15, 0, 0] == round(40000 / 65535 * 255) and pixels[0, 0, 0] == round(10000 / 65535 * 255)


def test_image_smaller_than_the_crop_is_refused(tmp_path):
    path = tmp_path / "tiny.png"
    Image.new("RGB", (50, 60)).save(path)
    with pytest.raises(ImageError, match="50x60, smaller than the 224-pixel frame"):
        decode(path, min_side=224)


def test_mask_of_another_size_is_refused(tmp_path):
    path = tmp_path / "m.png"
    Image.new("L", (30, 30), 255).save(path)
    with pytest.raises(ImageError, match="mask is 30x30 but its image is 40x30"):
        load_mask(path, (40, 30))
    assert load_mask(path, (30, 30)).all()


def test_masks_stored_as_zero_and_one_are_read(tmp_path):
    path = tmp_path / "m01.png"
    array = np.zeros((8, 8), np.uint8)
    array[2:4, 2:4] = 1
    Image.fromarray(array).save(path)
    assert load_mask(path, (8, 8)).sum() == 4


def test_the_exif_orientation_is_applied_to_images_and_masks_alike(tmp_path):
    from PIL import Image

    from eagle_cli.data.images import decode, load_mask

    picture = Image.new("RGB", (60, 40), "white")
    picture.putpixel((0, 0), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: show the picture rotated 90° clockwise
    picture.save(tmp_path / "turned.jpg", exif=exif, quality=100)
    mask = Image.new("L", (60, 40))
    mask.putpixel((0, 0), 255)
    mask.save(tmp_path / "turned_mask.png", exif=exif)
    loaded = decode(tmp_path / "turned.jpg")
    assert loaded.size == (40, 60)
    pixels = [(x, y) for x in range(40) for y in range(60)]
    red = max(pixels, key=lambda p: loaded.getpixel(p)[0] - loaded.getpixel(p)[2])
    assert red == (39, 0)  # the top-left corner, turned clockwise, is the top-right
    assert load_mask(tmp_path / "turned_mask.png", loaded.size)[0, 39]
