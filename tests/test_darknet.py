"""The Darknet reader (vad.darknet): cfg parsing, layer semantics and weight order on tiny hand-written files,
head decoding, and the real Yolo-Fastest models on UCSD Ped2 frames."""
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vad.darknet import DarknetDetector, DarknetError, DarknetModel, decode, fuse_batch_norm, load_darknet, parse_cfg

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
YOLO_DIR = SHARED / "weights" / "yolo-fastest-1.1-coco"
PED2 = SHARED / "data" / "ucsd_ped2" / "testing" / "frames"
PERSON, CAR, TRUCK = 0, 2, 7


def _write(tmp_path: Path, name: str, cfg: str, floats=(), version=(0, 2, 5)) -> Path:
    """``name.cfg`` and ``name.weights`` (header of ``version`` with a 64- or 32-bit "seen", then ``floats``)."""
    (tmp_path / f"{name}.cfg").write_text(cfg)
    major, minor, _ = version
    seen = np.array([1234], np.int64 if major * 10 + minor >= 2 else np.int32)
    path = tmp_path / f"{name}.weights"
    path.write_bytes(np.array(version, np.int32).tobytes() + seen.tobytes() + np.asarray(floats, np.float32).tobytes())
    return path


YOLO_6CH = "[yolo]\nmask=0\nanchors=2,2\nclasses=1\nnum=1\n"  # a head on 6 channels: 1 anchor x (1 class + 5)


# ------------------------------------------------------------------------------------------ cfg parsing

def test_parse_cfg_sections_comments_and_spaces(tmp_path):
    path = tmp_path / "a.cfg"
    path.write_text("# comment\n[net]\nwidth = 64\n; other comment\n\n[convolutional]\nfilters=8\n"
                    "activation=leaky\n[yolo]\nanchors = 1, 2,  3,4\n")
    assert parse_cfg(path) == [{"type": "net", "width": "64"},
                               {"type": "convolutional", "filters": "8", "activation": "leaky"},
                               {"type": "yolo", "anchors": "1, 2,  3,4"}]


@pytest.mark.parametrize("text, line, what", [
    ("[convolutional]\nfilters=8\n", 1, r"first section must be \[net\]"),
    ("width=3\n[net]\n", 1, "outside a section"),
    ("[net]\nwidth\n", 2, "malformed line"),
    ("[net]\n\n[route\n", 3, "malformed section header"),
    ("[net]\nwidth=1\nwidth=2\n", 3, "repeated"),
])
def test_parse_cfg_errors_name_file_and_line(tmp_path, text, line, what):
    path = tmp_path / "bad.cfg"
    path.write_text(text)
    with pytest.raises(DarknetError, match=what) as err:
        parse_cfg(path)
    assert f"{path}, line {line}" in str(err.value)


# ------------------------------------------------------------------------------------------ layers and weights

def test_bn_conv_loads_bias_scale_mean_var_then_weights(tmp_path):
    """x=2 through a 1x1 conv: BN(w*x) = (w*x - mean) / sqrt(var + eps) * scale + bias; then a plain conv (bias,
    weights). Every role has a distinct value, so any other order gives another result."""
    cfg = ("[net]\nwidth=1\nheight=1\nchannels=1\n"
           "[convolutional]\nbatch_normalize=1\nfilters=6\nsize=1\nactivation=linear\n"
           "[convolutional]\nfilters=6\nsize=1\ngroups=6\nactivation=linear\n" + YOLO_6CH)
    bias, scale, mean, var, weight = 1.0, 0.5, 2.0, 4.0, 3.0
    floats = [bias] * 6 + [scale] * 6 + [mean] * 6 + [var] * 6 + [weight] * 6  # BN conv, 1 input channel
    floats += [0.25] * 6 + [10.0] * 6  # depthwise conv without BN: bias, then weights
    model = load_darknet(_write(tmp_path, "bn", cfg, floats))
    out = model(torch.full((1, 1, 1, 1), 2.0))[0]
    bn_out = (weight * 2 - mean) / math.sqrt(var + 1e-6) * scale + bias  # = 2.0
    assert torch.allclose(out, torch.full((1, 6, 1, 1), 10.0 * bn_out + 0.25), atol=1e-5)


def test_maxpool_pads_with_minus_infinity_like_darknet(tmp_path):
    """All-negative input decreasing along rows and columns: each window's max is its top-left value, also at the
    right/bottom border (zero padding would give 0 there). size=2 stride=1 keeps the size; stride 2 halves it."""
    x = -torch.arange(1, 17, dtype=torch.float32).view(1, 1, 4, 4).repeat(1, 6, 1, 1)
    for stride, expected in ((1, x), (2, x[:, :, ::2, ::2])):
        cfg = f"[net]\nwidth=4\nheight=4\nchannels=6\n[maxpool]\nsize=2\nstride={stride}\n" + YOLO_6CH
        assert torch.equal(load_darknet(_write(tmp_path, f"pool{stride}", cfg))(x)[0], expected)
    cfg = "[net]\nwidth=4\nheight=4\nchannels=6\n[maxpool]\nsize=3\nstride=1\n" + YOLO_6CH  # SPP-style, centred
    expected = F.max_pool2d(F.pad(x, (1, 1, 1, 1), value=-math.inf), 3, 1)
    assert torch.equal(load_darknet(_write(tmp_path, "pool3", cfg))(x)[0], expected)


GRAPH_CFG = """[net]
width=4
height=4
channels=3
# 0: plain conv, leaky
[convolutional]
filters=4
size=3
pad=1
activation=leaky
# 1: depthwise conv with BN, relu
[convolutional]
batch_normalize=1
filters=4
size=3
groups=4
pad=1
activation=relu
# 2: 1 + 0
[shortcut]
from=-2
activation=linear
# 3, 4: 4x4 -> 2x2 -> 4x4
[maxpool]
size=2
stride=2
[upsample]
stride=2
# 5: concat of 4 (relative) and 0 (absolute)
[route]
layers=-1,0
# 6
[dropout]
probability=.5
# 7: second half of 5's channels = layer 0
[route]
layers=5
groups=2
group_id=1
# 8: 12 channels
[route]
layers=-3,-1
# 9: head
[convolutional]
filters=6
size=1
activation=linear
""" + YOLO_6CH


def test_route_shortcut_upsample_grouped_conv_match_a_reference(tmp_path):
    """A graph of every layer type against the same computation written with torch functions, from the arrays
    written to the file (so the weight order is checked too)."""
    rng = np.random.default_rng(0)
    w0, b0 = rng.normal(size=(4, 3, 3, 3)), rng.normal(size=4)
    w1, bn = rng.normal(size=(4, 1, 3, 3)), rng.normal(size=(4, 4))  # bn rows: bias, scale, mean, var
    bn[3] = rng.uniform(0.5, 2, size=4)
    w9, b9 = rng.normal(size=(6, 12, 1, 1)), rng.normal(size=6)
    floats = np.concatenate([b0, w0.ravel(), bn.ravel(), w1.ravel(), b9, w9.ravel()])
    model = load_darknet(_write(tmp_path, "graph", GRAPH_CFG, floats))
    x = torch.rand(2, 3, 4, 4)
    t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    y0 = F.leaky_relu(F.conv2d(x, t(w0), t(b0), padding=1), 0.1)
    y1 = F.conv2d(y0, t(w1), padding=1, groups=4)
    y1 = F.relu((y1 - t(bn[2]).view(1, 4, 1, 1)) / torch.sqrt(t(bn[3]).view(1, 4, 1, 1) + 1e-6)
                * t(bn[1]).view(1, 4, 1, 1) + t(bn[0]).view(1, 4, 1, 1))
    y2 = y1 + y0
    y4 = F.max_pool2d(y2, 2, 2).repeat_interleave(2, 2).repeat_interleave(2, 3)
    y5 = torch.cat([y4, y0], 1)
    y8 = torch.cat([y5, y0], 1)
    expected = F.conv2d(y8, t(w9), t(b9))
    with torch.no_grad():
        assert torch.allclose(model(x)[0], expected, atol=1e-5)
    assert model.max_stride == 2 and model.yolo_layers[0].stride == 1


def test_weights_must_be_consumed_exactly(tmp_path):
    n = 4 + 4 * 3 * 3 * 3 + 4 * 4 + 4 * 9 + 6 + 6 * 12  # the convolutions of GRAPH_CFG
    load_darknet(_write(tmp_path, "ok", GRAPH_CFG, np.zeros(n)))
    for name, count in (("short", n - 1), ("long", n + 1)):
        path = _write(tmp_path, name, GRAPH_CFG, np.zeros(count))
        with pytest.raises(DarknetError, match=f"holds {count} float32 values.*needs exactly {n}") as err:
            load_darknet(path)
        assert str(path) in str(err.value)


def test_old_header_has_a_32_bit_seen_counter(tmp_path):
    """major*10+minor < 2: a 16-byte header; the same floats after it load to the same model."""
    cfg = "[net]\nwidth=1\nheight=1\nchannels=1\n[convolutional]\nfilters=6\nsize=1\nactivation=linear\n" + YOLO_6CH
    floats = np.arange(12)  # bias 0..5, weights 6..11
    for version in ((0, 1, 0), (0, 2, 0), (1, 0, 0)):
        model = load_darknet(_write(tmp_path, "v%d%d" % version[:2], cfg, floats, version))
        assert torch.equal(model(torch.ones(1, 1, 1, 1))[0].flatten(), torch.arange(6.0) + torch.arange(6.0, 12))


@pytest.mark.parametrize("body, what", [
    ("[convolutional]\nfilters=6\nactivation=mish\n", r"layer 0 \[convolutional\] \(line 5\): activation 'mish'"),
    ("[convolutional]\nfilters=6\n[region]\nclasses=1\n", r"layer 1 \[region\] \(line 7\): layer type \[region\]"),
    ("[route]\nlayers=-2\n", "must name earlier layers"),
    ("[convolutional]\nfilters=5\n", "6 expected"),
    ("[convolutional]\nfilters=six\n", "filters='six'"),
])
def test_bad_layers_name_the_file_and_layer(tmp_path, body, what):
    cfg = "[net]\nwidth=1\nheight=1\nchannels=1\n" + body + YOLO_6CH
    path = _write(tmp_path, "bad", cfg)
    with pytest.raises(DarknetError, match=what) as err:
        load_darknet(path)
    assert str(path.with_suffix(".cfg")) in str(err.value)


def test_missing_cfg_and_bad_input_size(tmp_path):
    path = _write(tmp_path, "lonely", GRAPH_CFG)
    path.with_suffix(".cfg").unlink()
    with pytest.raises(DarknetError, match=r"lonely\.cfg is missing"):
        load_darknet(path)
    model = DarknetModel(parse_cfg(_write(tmp_path, "graph", GRAPH_CFG).with_suffix(".cfg")))
    model(torch.rand(1, 3, 6, 8))  # any multiple of the largest stride (2)
    with pytest.raises(DarknetError, match="multiples of 2"):
        model(torch.rand(1, 3, 5, 4))


# ------------------------------------------------------------------------------------------ decoding

@pytest.mark.parametrize("scale_x_y, x1, x2", [(1.0, 45.0, 225.0), (2.0, 90.0, 270.0)])
def test_decode_one_confident_cell(tmp_path, scale_x_y, x1, x2):
    """A 64x64 input, one stride-32 head (2x2 grid), anchor 16x32 px; cell (row 1, col 0) with tx=log 3
    (sigmoid 0.75; 1.0 with Darknet's scale_x_y=2: 0.75*2-0.5), ty=0, tw=log 2, th=0, class 1.
    Normalised centre (0.375 or 0.5, 0.75), size (0.5, 0.5); the frame is 360x240."""
    cfg = (f"[net]\nwidth=64\nheight=64\nchannels=7\n[maxpool]\nsize=32\nstride=32\n"
           f"[yolo]\nmask=0\nanchors=16,32\nclasses=2\nnum=1\nscale_x_y={scale_x_y}\n")
    model = DarknetModel(parse_cfg(_write(tmp_path, "head", cfg).with_suffix(".cfg")))
    head = torch.full((1, 7, 2, 2), -12.0)
    head[0, :, 1, 0] = torch.tensor([math.log(3), 0, math.log(2), 0, 12, -12, 12])
    (boxes, scores, class_ids), = decode([head], model, (240, 360), score_thr=0.5)
    assert torch.allclose(boxes, torch.tensor([[x1, 120.0, x2, 240.0]]), atol=1e-3)
    assert class_ids.tolist() == [1] and scores.item() == pytest.approx(torch.sigmoid(torch.tensor(12.0)) ** 2)
    (_, _, only), = decode([head], model, (240, 360), score_thr=0.5, classes=[1])
    assert only.tolist() == [1]
    assert len(decode([head], model, (240, 360), score_thr=0.5, classes=[0])[0][0]) == 0


def test_detector_on_a_tiny_model(tmp_path):
    """Grey and BGR frames, chunked batches and bf16 give the same detections (bf16: close)."""
    cfg = ("[net]\nwidth=32\nheight=32\nchannels=3\n[maxpool]\nsize=32\nstride=32\n"
           "[convolutional]\nfilters=6\nsize=1\nactivation=linear\n"
           "[yolo]\nmask=0\nanchors=16,16\nclasses=1\nnum=1\n")
    weights = np.zeros(6 + 18, np.float32)
    weights[4] = 5.0  # objectness bias: every cell confident
    weights[5] = 5.0  # class bias
    weights[6 + 3 * 2:6 + 3 * 2 + 3] = -1.0  # tw = -(sum of the cell's channel maxima): narrow boxes
    path = _write(tmp_path, "tiny", cfg, weights)
    frames = np.random.default_rng(1).integers(0, 256, size=(5, 48, 40), dtype=np.uint8)
    det = DarknetDetector(path, score_thr=0.5, input_size=(64, 32), batch=2)
    grey = det.detect_with_scores(frames)
    assert [len(b) for b, _, _ in grey] == [2] * 5  # a 1x2 grid, disjoint boxes
    for boxes, scores, class_ids in grey:
        assert boxes.dtype == np.float32 and scores.dtype == np.float32 and class_ids.tolist() == [0, 0]
        assert (boxes[:, [0, 1]] >= 0).all() and (boxes[:, 2] <= 40).all() and (boxes[:, 3] <= 48).all()
    bgr = DarknetDetector(path, score_thr=0.5, input_size=(64, 32), batch=16).detect(
        np.repeat(frames[..., None], 3, axis=3))
    assert all(np.array_equal(a, b) for a, b in zip(bgr, (b for b, _, _ in grey)))
    bf16 = DarknetDetector(path, score_thr=0.5, input_size=(64, 32), precision="bf16").detect(frames)
    assert all(np.allclose(a, b, atol=1.0) for a, b in zip(bf16, bgr))
    ort = DarknetDetector(path, score_thr=0.5, input_size=(64, 32), batch=3, runtime="onnxruntime")
    assert all(np.allclose(a, b, atol=1e-3) for a, b in zip(ort.detect(frames), bgr))
    assert all(len(b) == 8 for b in ort.detect(frames, input_size=(128, 64)))  # the exported graph takes any size
    with pytest.raises(DarknetError, match="runtime 'onnxruntime' runs fp32"):
        DarknetDetector(path, precision="bf16", runtime="onnxruntime")
    with pytest.raises(DarknetError, match="runtime 'tensorrt' is not one of"):
        DarknetDetector(path, runtime="tensorrt")
    with pytest.raises(DarknetError, match="multiples of 32"):
        DarknetDetector(path, input_size=(48, 32))
    wide = det.detect(frames, input_size=(128, 64))  # a per-call size: a grid of 2 rows x 4 columns
    assert all(len(b) == 8 for b in wide)
    with pytest.raises(DarknetError, match="multiples of 32"):
        det.detect(frames, input_size=(64, 40))
    with pytest.raises(DarknetError, match="uint8"):
        det.detect(frames.astype(np.float32))


# ------------------------------------------------------------------------------------------ real weights

needs_real = pytest.mark.needs("weights/yolo-fastest-1.1-coco", "data/ucsd_ped2")


def _frames(video: str, indices) -> np.ndarray:
    return np.stack([cv2.imread(str(PED2 / video / f"{i:03d}.jpg")) for i in indices])


@needs_real
@pytest.mark.parametrize("name, params", [("yolo-fastest-1.1-xl", 898_686), ("yolo-fastest-1.1", 332_798)])
def test_real_models_load_every_float(name, params):
    model = load_darknet(YOLO_DIR / f"{name}.weights")  # raises unless the file's floats are consumed exactly
    assert (model.width, model.height, model.channels) == (320, 320, 3)
    assert [(h.stride, h.classes) for h in model.yolo_layers] == [(32, 80), (16, 80)]
    assert model.yolo_layers[1].anchors == ((12, 18), (37, 49), (52, 132))
    assert sum(p.numel() for p in model.parameters()) == params
    assert not model.training


@needs_real
@pytest.mark.parametrize("name, input_size", [("yolo-fastest-1.1-xl", (320, 320)), ("yolo-fastest-1.1-xl", (416, 288)),
                                              ("yolo-fastest-1.1", (320, 320))])
def test_real_models_find_the_people_of_ped2(name, input_size):
    """13-19 people per frame on these frames (XL: 13, 15, 17 at 320x320; 18, 18, 19 at 416x288)."""
    frames = _frames("01", (0, 60, 120))
    det = DarknetDetector(YOLO_DIR / f"{name}.weights", classes=[PERSON], score_thr=0.2, input_size=input_size)
    for boxes, scores, class_ids in det.detect_with_scores(frames):
        assert len(boxes) >= 8 and (class_ids == PERSON).all() and (scores > 0.2).all()
        assert (np.diff(scores) <= 0).all()
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 360).all() and (boxes[:, 3] <= 240).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        heights = boxes[:, 3] - boxes[:, 1]
        assert np.median(heights) > 20 and heights.max() < 120  # pedestrians, not the whole frame


@needs_real
def test_real_model_sees_the_cart_of_video_04():
    """The cart of test video 04: a truck (0.77) in frame 102, a car (0.88) in frame 144, XL at 320x320."""
    det = DarknetDetector(YOLO_DIR / "yolo-fastest-1.1-xl.weights", classes=[CAR, TRUCK], score_thr=0.2)
    (_, s102, c102), (_, s144, c144) = det.detect_with_scores(_frames("04", (102, 144)))
    assert s102[c102 == TRUCK].max(initial=0) > 0.5
    assert s144[c144 == CAR].max(initial=0) > 0.5


@needs_real
def test_onnxruntime_gives_the_boxes_of_pytorch_on_real_frames():
    """The ONNX Runtime graph is the same network: the same people, boxes within a hundredth of a pixel."""
    frames = _frames("01", (0, 60, 120))
    weights = YOLO_DIR / "yolo-fastest-1.1-xl.weights"
    torch_boxes = DarknetDetector(weights, score_thr=0.3, input_size=(416, 288)).detect_with_scores(frames)
    ort_boxes = DarknetDetector(weights, score_thr=0.3, input_size=(416, 288), batch=2,
                                runtime="onnxruntime").detect_with_scores(frames)
    for (b1, s1, c1), (b2, s2, c2) in zip(torch_boxes, ort_boxes):
        assert len(b1) >= 8 and np.array_equal(c1, c2)
        np.testing.assert_allclose(b2, b1, atol=1e-2)
        np.testing.assert_allclose(s2, s1, atol=1e-4)


@needs_real
def test_folding_batch_norm_keeps_the_heads():
    """The detector folds batch norm into the convolutions: the same raw heads up to float rounding."""
    model = load_darknet(YOLO_DIR / "yolo-fastest-1.1-xl.weights")
    x = torch.from_numpy(_frames("01", (0, 30))[..., ::-1].copy()).permute(0, 3, 1, 2).float() / 255
    x = F.interpolate(x, size=(224, 320), mode="bilinear", align_corners=False)
    with torch.inference_mode():
        before = model(x)
        after = fuse_batch_norm(model)(x)
    assert not any(layer.bn is not None for layer in model.layers if hasattr(layer, "bn"))
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-4)
