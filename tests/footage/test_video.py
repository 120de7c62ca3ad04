"""Decoding real encoded footage: timestamps, bit depth, rotation, ranges, paths, and every error path."""

from __future__ import annotations

import numpy as np
import pytest

from backend.footage.video import (
    FrameRange,
    natural_key,
    normalize_rotation,
    open_footage,
    probe,
    read_image,
    rotate_image,
)
from backend.synthetic import clips as synthetic
from emoca_contract.errors import EmocaError


def _read_all(path, frames=None, **kw):
    warnings: list[str] = []
    with open_footage(path, frames, on_warning=warnings.append, **kw) as f:
        out = list(f)
        info = f.info
        n_errors = f.n_errors
        n_decoded = f.n_decoded
    return out, info, warnings, n_errors, n_decoded


# --- FrameRange -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", (0, None, 1)),
        ("10:", (10, None, 1)),
        (":100", (0, 100, 1)),
        ("::2", (0, None, 2)),
        ("5:50:5", (5, 50, 5)),
        ("7", (7, None, 1)),
        (" 3 : 9 : 2 ", (3, 9, 2)),
    ],
)
def test_frame_range_parse(text, expected):
    r = FrameRange.parse(text)
    assert (r.start, r.stop, r.step) == expected


@pytest.mark.parametrize("text", ["a:b", "1:2:3:4", "::0", "-5:", "1.5:"])
def test_frame_range_rejects_bad_text(text):
    with pytest.raises(EmocaError) as e:
        FrameRange.parse(text)
    assert e.value.code == "config_invalid"


def test_frame_range_matches_python_slices():
    for r in [FrameRange(3, 40, 7), FrameRange(0, None, 3), FrameRange(10, 11, 1)]:
        expected = list(range(100))[slice(r.start, r.stop, r.step)]
        assert [i for i in range(100) if r.contains(i)] == expected


# --- video ------------------------------------------------------------------------------------------------------


def test_counter_clip_decodes_every_frame_in_order(counter_clip):
    frames, info, warnings, n_errors, _ = _read_all(counter_clip.path)
    assert [f.index for f in frames] == list(range(60))
    assert [synthetic.read_counter(f.image) for f in frames] == list(range(60))
    np.testing.assert_allclose([f.time for f in frames], np.arange(60) / 25.0, atol=1e-6)
    assert info.kind == "video" and info.fps == pytest.approx(25.0) and info.frame_count == 60
    assert (info.width, info.height, info.rotation, info.bit_depth) == (64, 48, 0, 8)
    assert info.codec == "h264" and info.time_base is not None
    assert frames[0].image.dtype == np.uint8 and frames[0].image.shape == (48, 64, 3)
    assert warnings == [] and n_errors == 0


def test_frame_range_and_stride(counter_clip):
    frames, *_ = _read_all(counter_clip.path, FrameRange.parse("5:40:7"))
    assert [f.index for f in frames] == [5, 12, 19, 26, 33]
    assert [synthetic.read_counter(f.image) for f in frames] == [5, 12, 19, 26, 33]
    np.testing.assert_allclose([f.time for f in frames], np.array([5, 12, 19, 26, 33]) / 25.0, atol=1e-6)


def test_late_start_seeks_instead_of_decoding_everything(clip_dir):
    clip = synthetic.make_counter_clip(clip_dir / "long.mp4", n_frames=400, gop=25)
    frames, _, _, _, n_decoded = _read_all(clip.path, "350:360:3")
    assert [f.index for f in frames] == [350, 353, 356, 359]
    assert [synthetic.read_counter(f.image) for f in frames] == [350, 353, 356, 359]
    # decoding forward from frame 0 would decode 360 frames; the seek lands on the keyframe before 350
    assert n_decoded < 60


def test_variable_frame_rate_times_are_the_written_pts(clip_dir):
    clip = synthetic.make_vfr_clip(clip_dir / "vfr.mp4")
    frames, info, *_ = _read_all(clip.path)
    assert [synthetic.read_counter(f.image) for f in frames] == list(range(clip.n_frames))
    times = np.array([f.time for f in frames])
    np.testing.assert_allclose(times, clip.times, atol=1e-6)
    assert not np.allclose(np.diff(times), np.diff(times)[0])  # really variable
    assert [f.index for f in frames] == list(range(clip.n_frames))
    assert info.fps == pytest.approx(clip.n_frames / (clip.times[-1] + 0.02), rel=0.1)  # average rate


def test_10bit_decodes_to_8bit_rgb(clip_dir):
    clip = synthetic.make_10bit_clip(clip_dir / "ten.mp4")
    frames, info, *_ = _read_all(clip.path)
    assert info.pix_fmt == "yuv420p10le" and info.bit_depth == 10
    assert len(frames) == clip.n_frames
    expected, _ = synthetic.render_astronaut_frames(clip.n_frames, clip.size, "pan")
    for f, e in zip(frames, expected):
        assert f.image.dtype == np.uint8 and f.image.shape == e.shape
        assert np.abs(f.image.astype(float) - e).mean() < 4.0


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_display_rotation_is_applied(clip_dir, rotation):
    clip = synthetic.make_astronaut_clip(
        clip_dir / f"rot{rotation}.mp4", n_frames=4, size=(320, 180), rotation=rotation
    )
    frames, info, *_ = _read_all(clip.path)
    expected, _ = synthetic.render_astronaut_frames(4, (320, 180), "pan")
    assert info.rotation == rotation
    assert (info.width, info.height) == (320, 180)
    for f, e in zip(frames, expected):
        assert f.image.shape == e.shape
        right = np.abs(f.image.astype(float) - e).mean()
        wrong = np.abs(rotate_image(f.image, 180).astype(float) - e).mean()
        assert right < 4.0 < wrong


def test_rotate_image_helper():
    img = np.arange(6, dtype=np.uint8).reshape(2, 3, 1)
    cw = rotate_image(img, 90)
    assert cw.shape == (3, 2, 1)
    # clockwise: the left column, read bottom-up, becomes the top row
    assert cw[0, :, 0].tolist() == [3, 0]
    assert np.array_equal(rotate_image(cw, 270), img)
    assert np.array_equal(rotate_image(img, 180), img[::-1, ::-1])


def test_non_ascii_video_path(unicode_tmp):
    clip = synthetic.make_counter_clip(unicode_tmp / "clip é 顔.mp4", n_frames=5)
    frames, info, *_ = _read_all(clip.path)
    assert len(frames) == 5 and info.path.endswith("clip é 顔.mp4")


# --- images -----------------------------------------------------------------------------------------------------


def test_image_sequence_folder_and_pattern(unicode_tmp):
    clip = synthetic.make_image_sequence(unicode_tmp / "seq", n_frames=12, size=(160, 90))
    assert clip.path.name == "frame_%04d.png" and clip.n_frames == 12
    expected, _ = synthetic.render_astronaut_frames(12, (160, 90), "pan", face_height=120.0 * 90 / 360)
    for source in (unicode_tmp / "seq", unicode_tmp / "seq" / "frame_%04d.png"):
        frames, info, *_ = _read_all(source, "::2", fps=10.0)
        assert info.kind == "images" and info.frame_count == 12 and (info.width, info.height) == (160, 90)
        assert [f.index for f in frames] == [0, 2, 4, 6, 8, 10]
        np.testing.assert_allclose([f.time for f in frames], [0, 0.2, 0.4, 0.6, 0.8, 1.0])
        for f in frames:  # PNG is lossless: exactly the rendered frames, in order (frame_0010 after frame_0009)
            assert np.array_equal(f.image, expected[f.index])


def test_natural_sort():
    names = ["f10.png", "f2.png", "f1.png", "F3.png"]
    assert sorted(names, key=natural_key) == ["f1.png", "f2.png", "F3.png", "f10.png"]


def test_single_image_non_ascii(unicode_tmp):
    import cv2

    img = synthetic.astronaut_image()
    path = unicode_tmp / "visage é.jpg"
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    buf.tofile(str(path))
    frames, info, *_ = _read_all(path)
    assert info.kind == "image" and len(frames) == 1 and frames[0].index == 0
    assert np.abs(frames[0].image.astype(float) - img).mean() < 3.0
    assert read_image(path).shape == img.shape


def test_corrupt_image_in_sequence_is_skipped_with_warning(tmp_path):
    synthetic.make_image_sequence(tmp_path, n_frames=5, size=(64, 36))
    (tmp_path / "frame_0003.png").write_bytes(b"not a png")
    frames, _, warnings, n_errors, _ = _read_all(tmp_path)
    assert [f.index for f in frames] == [0, 1, 3, 4]
    assert n_errors == 1 and len(warnings) == 1 and "frame_0003.png" in warnings[0]


def test_with_empty_frames_a_corrupt_image_keeps_its_place(tmp_path):
    """Capture asks for empty frames: one row per source frame (docs/formats.md), the corrupt one invalid."""
    synthetic.make_image_sequence(tmp_path, n_frames=5, size=(64, 36))
    (tmp_path / "frame_0003.png").write_bytes(b"not a png")
    frames, info, warnings, n_errors, n_decoded = _read_all(tmp_path, empty_frames=True)
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]
    assert [f.decoded for f in frames] == [True, True, False, True, True]
    assert frames[2].image.shape == (0, 0, 3) and frames[2].time == pytest.approx(2 / info.fps)
    assert frames[3].image.shape == (36, 64, 3)
    assert n_errors == 1 and n_decoded == 4 and "frame_0003.png" in warnings[0] and "invalid row" in warnings[0]


def test_with_empty_frames_lost_packets_keep_their_frames_places(counter_clip, tmp_path):
    """A constant-rate video whose packets 30-31 are garbage: with empty frames every index 0..59 comes out, the
    lost ones empty, the others the right pictures."""
    packets = _packets(counter_clip.path)
    data = bytearray(counter_clip.path.read_bytes())
    rng = np.random.default_rng(0)
    for pos, size in packets[30:32]:
        data[pos : pos + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    p = tmp_path / "glitch.mp4"
    p.write_bytes(bytes(data))
    skipped, *_ = _read_all(p)
    frames, info, warnings, *_ = _read_all(p, empty_frames=True)
    assert [f.index for f in frames] == list(range(60))
    decoded = [f for f in frames if f.decoded]
    assert [f.index for f in decoded] == [f.index for f in skipped]  # the same pictures, the gaps kept
    assert all(synthetic.read_counter(f.image) == f.index for f in decoded)
    empty = [f for f in frames if not f.decoded]
    assert empty and all(f.time == pytest.approx(f.index / info.fps) for f in empty)
    assert any("invalid row" in w for w in warnings)


# --- errors -----------------------------------------------------------------------------------------------------


def _code(path, frames=None):
    with pytest.raises(EmocaError) as e:
        open_footage(path, frames)
    assert str(path.name if hasattr(path, "name") else path) in e.value.message
    return e.value.code


def test_missing_file(tmp_path):
    assert _code(tmp_path / "nope.mp4") == "input_missing"
    assert _code(tmp_path / "shots" / "frame_%04d.png") == "input_missing"


@pytest.mark.parametrize("name", ["notes.mp4", "notes.txt", "notes.mov"])
def test_text_file_is_unsupported(tmp_path, name):
    p = tmp_path / name
    p.write_text("these are my notes, not a video\n" * 20)
    assert _code(p) == "input_unsupported"


def test_audio_only_has_no_video_stream(tmp_path):
    p = synthetic.make_audio_only(tmp_path / "tone.wav")
    assert _code(p) == "input_unsupported"


def test_the_no_video_stream_error_names_the_streams_there_are(tmp_path):
    p = synthetic.make_audio_only(tmp_path / "tone.wav")
    with pytest.raises(EmocaError) as e:
        open_footage(p)
    assert "streams: audio (pcm_s16le)" in e.value.message, e.value.message


def test_zero_length_file(tmp_path):
    p = tmp_path / "empty.mp4"
    p.write_bytes(b"")
    assert _code(p) == "input_corrupt"


def test_damaged_container_header(counter_clip, tmp_path):
    p = tmp_path / "damaged.mp4"
    data = bytearray(counter_clip.path.read_bytes())
    data[8:400] = bytes(392)  # keep the 'ftyp' signature, wipe the index that follows
    p.write_bytes(bytes(data))
    assert _code(p) in ("input_corrupt",)


def test_range_past_the_end_is_empty(counter_clip):
    assert _code(counter_clip.path, "500:") == "input_empty"


def test_empty_folder(tmp_path):
    assert _code(tmp_path) == "input_empty"


def _packets(path):
    import av

    with av.open(str(path)) as c:
        return [(p.pos, p.size) for p in c.demux(video=0) if p.size]


def test_truncated_file_yields_frames_before_the_cut_then_warns(counter_clip, tmp_path):
    pos, size = _packets(counter_clip.path)[30]  # cut in the middle of the 31st packet
    total = counter_clip.path.stat().st_size
    p = synthetic.truncate_file(counter_clip.path, tmp_path / "cut.mp4", (pos + size // 2) / total)
    frames, _, warnings, *_ = _read_all(p)
    assert 20 < len(frames) < 60
    # every frame that came out is the right one
    assert [synthetic.read_counter(f.image) for f in frames] == [f.index for f in frames]
    assert [f.index for f in frames] == list(range(len(frames)))
    assert warnings and any("truncated" in w for w in warnings)


def test_truncated_mp4_with_index_at_the_end_is_corrupt(clip_dir, tmp_path):
    clip = synthetic.make_counter_clip(clip_dir / "moov_last.mp4", n_frames=30, faststart=False)
    p = synthetic.truncate_file(clip.path, tmp_path / "cut_moov_last.mp4", 0.6)
    assert _code(p) == "input_corrupt"


def test_rotation_snapping():
    assert [normalize_rotation(a) for a in (0, 89.6, -90, 180, -180, 270, 360, 450)] == [
        0,
        90,
        270,
        180,
        180,
        270,
        0,
        90,
    ]


def test_corrupt_packets_mid_stream_are_skipped(counter_clip, tmp_path):
    packets = _packets(counter_clip.path)
    data = bytearray(counter_clip.path.read_bytes())
    rng = np.random.default_rng(0)
    for pos, size in packets[30:32]:
        data[pos : pos + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    p = tmp_path / "glitch.mp4"
    p.write_bytes(bytes(data))
    frames, _, warnings, n_errors, _ = _read_all(p)
    assert n_errors >= 1 and len(warnings) >= 1
    assert 40 < len(frames) < 60
    # constant rate: indices come from timestamps, so the frames after the glitch keep their true numbers
    assert all(synthetic.read_counter(f.image) == f.index for f in frames)
    assert frames[-1].index == 59


def test_probe(counter_clip):
    info = probe(counter_clip.path)
    assert info.frame_count == 60 and info.to_dict()["fps"] == pytest.approx(25.0)


def test_jpeg_exif_orientation_is_applied(tmp_path):
    from PIL import Image

    img = np.zeros((40, 60, 3), np.uint8)
    img[:10, :20] = 255  # a white block at the top-left of the stored (landscape) picture
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF orientation 6: turn 90 degrees clockwise to display
    Image.fromarray(img).save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    frames, info, *_ = _read_all(tmp_path / "phone.jpg")
    shown = frames[0].image
    assert shown.shape == (60, 40, 3) and (info.width, info.height) == (40, 60)
    assert shown[:20, 30:].mean() > 200 and shown[:20, :10].mean() < 30  # the block is now top-right
