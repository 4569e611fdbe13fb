"""Darknet YOLO models in PyTorch: the ``.cfg`` network description, the ``.weights`` arrays, the heads' decoding
and a frame detector.

Both files are plain data (INI-like text and little-endian float32 arrays), read here without pickle and without
OpenCV's dnn module, whose Darknet reader OpenCV 5 dropped. The layers of YOLOv3/v4-tiny-like and Yolo-Fastest
models are supported (convolutional with depthwise groups, maxpool, route, shortcut, upsample, dropout, yolo);
anything else is refused with a ``DarknetError`` naming the file and the layer, rather than computed wrongly.
"""
from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms

BN_EPS = 1e-6  # Darknet's CPU batch norm: (x - mean) / sqrt(var + 1e-6)
# In place where the operation allows it: the activation always acts on a fresh tensor (a convolution's or a sum's
# output), and on a CPU these memory-bound passes took over a third of the detector's time out of place.
ACTIVATIONS = {"leaky": lambda: nn.LeakyReLU(0.1, inplace=True), "linear": nn.Identity,
               "relu": lambda: nn.ReLU(inplace=True), "logistic": nn.Sigmoid}
PRECISIONS = ("fp32", "bf16")
RUNTIMES = ("torch", "onnxruntime")


class DarknetError(ValueError):
    """A bad .cfg or .weights file, or an input the model cannot take; the message names the file and the fault."""


class CfgSection(dict):
    """One ``[type]`` section of a .cfg: ``{"type": ..., option: value}`` (strings), plus the ``line`` it starts
    on, so that errors found while building the model can point at it."""

    def __init__(self, kind: str, line: int):
        super().__init__(type=kind)
        self.line = line


def parse_cfg(path: str | Path) -> list[dict[str, str]]:
    """The sections of a Darknet .cfg in order; ``#``/``;`` comment lines and blank lines are skipped.

    Keys and values are stripped of surrounding spaces (Darknet ignores all spaces). The first section must be
    ``[net]`` (or ``[network]``); an option outside a section, a repeated option or a line that is neither a
    ``[section]`` nor ``key=value`` is a ``DarknetError`` naming the file and line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DarknetError(f"{path}: cannot read the cfg file ({err})") from err
    sections: list[dict[str, str]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        where = f"{path}, line {number}"
        if line[0] == "[":
            kind = line[1:-1].strip()
            if not line.endswith("]") or not kind:
                raise DarknetError(f"{where}: malformed section header {line!r}")
            if not sections and kind not in ("net", "network"):
                raise DarknetError(f"{where}: the first section must be [net], found [{kind}]")
            sections.append(CfgSection(kind, number))
            continue
        key, sep, value = (part.strip() for part in line.partition("="))
        if not sep or not key:
            raise DarknetError(f"{where}: malformed line {line!r} (expected [section] or key=value)")
        if not sections:
            raise DarknetError(f"{where}: option {key!r} outside a section (the file must start with [net])")
        if key in sections[-1]:
            raise DarknetError(f"{where}: option {key!r} repeated in [{sections[-1]['type']}]")
        sections[-1][key] = value
    if not sections:
        raise DarknetError(f"{path}: no sections (a Darknet cfg starts with [net])")
    return sections


class _Options:
    """Typed access to one section's options, with Darknet's defaults and errors that name the file and layer."""

    def __init__(self, section: dict[str, str], where: str):
        line = getattr(section, "line", None)
        self.section = section
        self.where = where + (f" (line {line})" if line else "")

    def error(self, what: str) -> DarknetError:
        return DarknetError(f"{self.where}: {what}")

    def numbers(self, key: str, kind: type = int, default: list | None = None) -> list:
        if key not in self.section:
            if default is None:
                raise self.error(f"option {key!r} missing")
            return default
        try:
            return [kind(v) for v in self.section[key].split(",") if v.strip()]
        except ValueError:
            raise self.error(f"{key}={self.section[key]!r} is not a list of {kind.__name__} values") from None

    def number(self, key: str, kind: type = int, default: float | None = None, minimum: float | None = None):
        values = self.numbers(key, kind, None if default is None else [default])
        if len(values) != 1 or (minimum is not None and values[0] < minimum):
            raise self.error(f"{key}={self.section[key]!r} must be one {kind.__name__}" +
                             (f" >= {minimum}" if minimum is not None else ""))
        return values[0]

    def activation(self, default: str) -> nn.Module:
        name = self.section.get("activation", default)
        if name not in ACTIVATIONS:
            raise self.error(f"activation {name!r} is not supported (supported: {', '.join(ACTIVATIONS)})")
        return ACTIVATIONS[name]()

    def refuse(self, key: str, default: str) -> None:
        """Options that would change the result but are not implemented must keep their no-op value."""
        if self.section.get(key, default) != default:
            raise self.error(f"option {key}={self.section[key]} is not supported")


@dataclass(frozen=True)
class YoloHead:
    """One [yolo] layer: its layer index, grid stride (input pixels per cell), anchors (width, height) in pixels of
    the network input, class count and Darknet's ``scale_x_y`` centre scaling."""
    index: int
    stride: int
    anchors: tuple[tuple[float, float], ...]
    classes: int
    scale_x_y: float


class _Convolutional(nn.Module):
    def __init__(self, c_in: int, filters: int, size: int, stride: int, padding: int, groups: int,
                 batch_normalize: bool, activation: nn.Module):
        super().__init__()
        self.conv = nn.Conv2d(c_in, filters, size, stride, padding, groups=groups, bias=not batch_normalize)
        self.bn = nn.BatchNorm2d(filters, eps=BN_EPS) if batch_normalize else None
        self.act = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.act(self.bn(x) if self.bn is not None else x)


class _MaxPool(nn.Module):
    """Darknet's max pooling: ``padding`` cells in all (``padding // 2`` before, the rest after) count as -inf,
    so out = (in + padding - size) // stride + 1 (= ceil(in / stride) with the default padding size - 1)."""

    def __init__(self, size: int, stride: int, padding: int):
        super().__init__()
        self.size, self.stride = size, stride
        self.pad = (padding // 2, padding - padding // 2) * 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.pad(x, self.pad, value=-math.inf), self.size, self.stride)


class _Route(nn.Module):
    """Concatenation of earlier layers' outputs along channels, each optionally cut to its ``group_id``-th of
    ``groups`` channel groups."""

    def __init__(self, sources: list[int], groups: int, group_id: int):
        super().__init__()
        self.sources, self.groups, self.group_id = sources, groups, group_id

    def forward(self, outputs: list[torch.Tensor | None]) -> torch.Tensor:
        parts = [outputs[i] for i in self.sources]
        if self.groups > 1:
            parts = [p.chunk(self.groups, dim=1)[self.group_id] for p in parts]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


class _Shortcut(nn.Module):
    """The previous output plus earlier layers' outputs (same shape), then the activation."""

    def __init__(self, sources: list[int], activation: nn.Module):
        super().__init__()
        self.sources, self.act = sources, activation

    def forward(self, x: torch.Tensor, outputs: list[torch.Tensor | None]) -> torch.Tensor:
        for i in self.sources:
            x = x + outputs[i]
        return self.act(x)


class _Upsample(nn.Module):
    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.stride, mode="nearest")


class DarknetModel(nn.Module):
    """The network of a parsed Darknet cfg; ``forward`` returns the raw output of each [yolo] layer.

    Attributes: ``width``, ``height``, ``channels`` (the [net] input), ``yolo_layers`` (a ``YoloHead`` per head,
    in cfg order), ``max_stride`` (input height and width must be multiples of it; any multiple works).
    ``source`` names the cfg in error messages. The weights are those of a fresh model until
    ``load_darknet_weights``.
    """

    def __init__(self, sections: list[dict[str, str]], source: str = "<cfg>"):
        super().__init__()
        if not sections or sections[0].get("type") not in ("net", "network"):
            raise DarknetError(f"{source}: the first section must be [net]")
        net = _Options(sections[0], f"{source} [net]")
        self.width, self.height = net.number("width", minimum=1), net.number("height", minimum=1)
        self.channels = net.number("channels", default=3, minimum=1)
        self.source = source
        layers: list[nn.Module] = []
        heads: list[YoloHead] = []
        channels: list[int] = []  # output channels of each layer
        scales: list[int] = []  # input pixels per output cell of each layer
        referenced: set[int] = set()  # layers whose output a later route or shortcut reads
        c, scale = self.channels, 1
        for i, section in enumerate(sections[1:]):
            opt = _Options(section, f"{source}, layer {i} [{section['type']}]")
            kind = section["type"]
            if kind == "convolutional":
                filters, size = opt.number("filters", default=1, minimum=1), opt.number("size", default=1, minimum=1)
                stride, groups = opt.number("stride", default=1, minimum=1), opt.number("groups", default=1, minimum=1)
                for key, default in (("stride_x", str(stride)), ("stride_y", str(stride)), ("dilation", "1"),
                                     ("binary", "0"), ("xnor", "0"), ("antialiasing", "0")):
                    opt.refuse(key, default)
                padding = size // 2 if opt.number("pad", default=0) else opt.number("padding", default=0, minimum=0)
                if c % groups or filters % groups:
                    raise opt.error(f"groups={groups} must divide the input channels ({c}) and filters ({filters})")
                layers.append(_Convolutional(c, filters, size, stride, padding, groups,
                                             bool(opt.number("batch_normalize", default=0)),
                                             opt.activation("logistic")))
                c, scale = filters, scale * stride
            elif kind == "maxpool":
                stride = opt.number("stride", default=1, minimum=1)
                size = opt.number("size", default=stride, minimum=1)
                for key, default in (("stride_x", str(stride)), ("stride_y", str(stride)), ("maxpool_depth", "0"),
                                     ("antialiasing", "0")):
                    opt.refuse(key, default)
                layers.append(_MaxPool(size, stride, opt.number("padding", default=size - 1, minimum=0)))
                scale *= stride
            elif kind in ("route", "shortcut"):
                sources = [k + i if k < 0 else k for k in opt.numbers("layers" if kind == "route" else "from")]
                if not sources or any(not 0 <= k < i for k in sources):
                    raise opt.error(f"layer references {section.get('layers', section.get('from'))!r} must name "
                                    f"earlier layers (0..{i - 1}, or -1..-{i})")
                if any(scales[k] != scales[sources[0]] for k in sources):
                    raise opt.error(f"layers {sources} have different spatial sizes")
                referenced.update(sources)
                if kind == "route":
                    groups = opt.number("groups", default=1, minimum=1)
                    group_id = opt.number("group_id", default=0, minimum=0)
                    if group_id >= groups or any(channels[k] % groups for k in sources):
                        raise opt.error(f"groups={groups}, group_id={group_id} do not split the channels "
                                        f"{[channels[k] for k in sources]}")
                    layers.append(_Route(sources, groups, group_id))
                    c, scale = sum(channels[k] for k in sources) // groups, scales[sources[0]]
                else:
                    opt.refuse("weights_type", "none")
                    if any(channels[k] != c or scales[k] != scale for k in sources):
                        raise opt.error(f"cannot add layers {sources} to the previous output: shapes differ")
                    layers.append(_Shortcut(sources, opt.activation("linear")))
            elif kind == "upsample":
                opt.refuse("scale", "1")
                stride = opt.number("stride", default=2, minimum=1)
                if scale % stride:
                    raise opt.error(f"stride={stride} upsamples past the input resolution")
                layers.append(_Upsample(stride))
                scale //= stride
            elif kind == "dropout":
                layers.append(nn.Identity())
            elif kind == "yolo":
                opt.refuse("new_coords", "0")
                classes = opt.number("classes", default=20, minimum=1)
                num = opt.number("num", default=1, minimum=1)
                anchors, mask = opt.numbers("anchors", float), opt.numbers("mask", default=list(range(num)))
                if len(anchors) != 2 * num or any(not 0 <= m < num for m in mask):
                    raise opt.error(f"anchors must hold num={num} pairs and mask indices below num "
                                    f"(got {len(anchors)} values, mask {mask})")
                if c != len(mask) * (classes + 5):
                    raise opt.error(f"its input has {c} channels, {len(mask)} anchors x ({classes} classes + 5) "
                                    f"= {len(mask) * (classes + 5)} expected")
                heads.append(YoloHead(i, scale, tuple((anchors[2 * m], anchors[2 * m + 1]) for m in mask), classes,
                                      opt.number("scale_x_y", float, default=1.0)))
                layers.append(nn.Identity())
            else:
                raise opt.error(f"layer type [{kind}] is not supported")
            channels.append(c)
            scales.append(scale)
        if not heads:
            raise DarknetError(f"{source}: no [yolo] layer")
        self.layers = nn.ModuleList(layers)
        self.yolo_layers = heads
        self.max_stride = max(scales)
        self._keep = referenced | {h.index for h in heads}

    def check_size(self, height: int, width: int) -> None:
        """Raise ``DarknetError`` unless ``height`` and ``width`` are positive multiples of ``max_stride``."""
        if height <= 0 or width <= 0 or height % self.max_stride or width % self.max_stride:
            raise DarknetError(f"{self.source}: input of {width}x{height} (width x height): both must be positive "
                               f"multiples of {self.max_stride}, the model's largest stride")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Raw head outputs, (N, anchors*(5+classes), H/stride, W/stride) per [yolo] layer, for x float
        (N, channels, H, W) RGB in [0, 1]."""
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise DarknetError(f"{self.source}: input of shape {tuple(x.shape)}, expected (N, {self.channels}, H, W)")
        self.check_size(x.shape[2], x.shape[3])
        outputs: list[torch.Tensor | None] = []
        for i, layer in enumerate(self.layers):
            if isinstance(layer, _Route):
                x = layer(outputs)
            elif isinstance(layer, _Shortcut):
                x = layer(x, outputs)
            else:
                x = layer(x)
            outputs.append(x if i in self._keep else None)
        return [outputs[h.index] for h in self.yolo_layers]


def _conv_layers(model: DarknetModel) -> list[_Convolutional]:
    return [layer for layer in model.layers if isinstance(layer, _Convolutional)]


def load_darknet_weights(model: DarknetModel, path: str | Path) -> None:
    """Copy a Darknet .weights file into ``model``, which must consume every float of it exactly.

    Layout: int32 major, minor, revision; the "seen" counter as int64 (int32 when major*10+minor < 2); then, per
    convolution in cfg order, float32 values: with batch norm its bias, scale, running mean, running variance, else
    the convolution bias; then the convolution weights (filters, channels/groups, size, size).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DarknetError(f"{path}: cannot read the weights file ({err})") from err
    major, minor = (int(v) for v in np.frombuffer(data[:8], dtype="<i4")) if len(data) >= 8 else (0, 0)
    header = 20 if major * 10 + minor >= 2 and major < 1000 and minor < 1000 else 16  # int64 "seen", as Darknet
    if len(data) < header:
        raise DarknetError(f"{path}: too short for a Darknet weights header ({len(data)} bytes)")
    payload = data[header:]
    convs = _conv_layers(model)
    expected = sum(layer.conv.weight.numel() + 4 * layer.conv.out_channels if layer.bn is not None
                   else layer.conv.weight.numel() + layer.conv.out_channels for layer in convs)
    if len(payload) % 4 or len(payload) // 4 != expected:
        raise DarknetError(f"{path}: holds {len(payload) / 4:g} float32 values after its {header}-byte header, "
                           f"the network of {model.source} needs exactly {expected}")
    values = torch.from_numpy(np.frombuffer(payload, dtype="<f4").astype(np.float32))
    offset = 0
    with torch.no_grad():
        for layer in convs:
            targets = [layer.bn.bias, layer.bn.weight, layer.bn.running_mean, layer.bn.running_var] \
                if layer.bn is not None else [layer.conv.bias]
            for target in targets + [layer.conv.weight]:
                target.copy_(values[offset:offset + target.numel()].view_as(target))
                offset += target.numel()


def fuse_batch_norm(model: DarknetModel) -> DarknetModel:
    """Fold every convolution's batch norm into its weights and bias (inference only: one pass over memory less per
    layer, which the many small 1x1 and depthwise layers of these models feel). Returns ``model``, changed in place."""
    with torch.no_grad():
        for layer in _conv_layers(model):
            if layer.bn is None:
                continue
            bn, conv = layer.bn, layer.conv
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                              groups=conv.groups, bias=True)
            fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
            fused.bias.copy_(bn.bias - bn.running_mean * scale)
            layer.conv, layer.bn = fused, None
    return model


def load_darknet(weights_path: str | Path, cfg_path: str | Path | None = None) -> DarknetModel:
    """The model of a Darknet .weights file, in eval mode; its cfg defaults to the same name with ``.cfg``."""
    weights = Path(weights_path)
    if not weights.is_file():
        raise DarknetError(f"{weights}: weights file not found")
    cfg = Path(cfg_path) if cfg_path is not None else weights.with_suffix(".cfg")
    if not cfg.is_file():
        raise DarknetError(f"{weights}: its network description {cfg} is missing (put the .cfg beside the weights "
                           "under the same name, or give its path)")
    model = DarknetModel(parse_cfg(cfg), source=str(cfg))
    load_darknet_weights(model, weights)
    return model.eval()


def decode(outputs: Sequence[torch.Tensor], model: DarknetModel, frame_hw: tuple[int, int], *,
           score_thr: float = 0.0, classes: Sequence[int] | None = None
           ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Detections of each image from the raw head ``outputs`` of ``model``: per image ``(boxes, scores,
    class_ids)``, one row per (box, class) pair with score > ``score_thr`` (all classes, or those in ``classes``).

    Boxes are float32 xyxy in pixels of the original frame of ``frame_hw`` = (height, width), clipped to it (the
    input was a plain resize of it); score = sigmoid(objectness) * sigmoid(class logit). No suppression here.
    """
    frame_h, frame_w = frame_hw
    all_boxes, all_scores = [], []
    for out, head in zip(outputs, model.yolo_layers, strict=True):
        n, c, gh, gw = out.shape
        a = len(head.anchors)
        if c != a * (head.classes + 5):
            raise DarknetError(f"{model.source}: head of layer {head.index} has {c} channels, expected "
                               f"{a * (head.classes + 5)}")
        p = out.float().reshape(n, a, head.classes + 5, gh, gw).permute(0, 1, 3, 4, 2)  # (n, a, gh, gw, 5+C)
        gy, gx = torch.meshgrid(torch.arange(gh, device=out.device), torch.arange(gw, device=out.device),
                                indexing="ij")
        s = head.scale_x_y
        xy = torch.sigmoid(p[..., :2]) * s - (s - 1) / 2
        cx, cy = (xy[..., 0] + gx) / gw, (xy[..., 1] + gy) / gh
        anchors = torch.tensor(head.anchors, dtype=torch.float32, device=out.device)
        half_w = torch.exp(p[..., 2]) * anchors[:, 0].view(a, 1, 1) / (gw * head.stride) / 2
        half_h = torch.exp(p[..., 3]) * anchors[:, 1].view(a, 1, 1) / (gh * head.stride) / 2
        boxes = torch.stack([(cx - half_w) * frame_w, (cy - half_h) * frame_h, (cx + half_w) * frame_w,
                             (cy + half_h) * frame_h], dim=-1)
        scores = torch.sigmoid(p[..., 4:5]) * torch.sigmoid(p[..., 5:])
        if classes is not None:
            scores = scores[..., list(classes)]
        all_boxes.append(boxes.reshape(n, -1, 4))
        all_scores.append(scores.reshape(n, -1, scores.shape[-1]))
    boxes = torch.cat(all_boxes, dim=1)
    boxes[..., 0::2] = boxes[..., 0::2].clamp(0, frame_w)
    boxes[..., 1::2] = boxes[..., 1::2].clamp(0, frame_h)
    scores = torch.cat(all_scores, dim=1)
    class_map = torch.as_tensor(list(classes) if classes is not None else range(scores.shape[-1]),
                                dtype=torch.int64, device=scores.device)
    result = []
    for image_boxes, image_scores in zip(boxes, scores):
        rows, cols = torch.nonzero(image_scores > score_thr, as_tuple=True)
        result.append((image_boxes[rows], image_scores[rows, cols], class_map[cols]))
    return result


def onnxruntime_session(model: DarknetModel, threads: int):
    """An ONNX Runtime session computing ``model``'s forward pass (any batch, any valid input size), for a CPU.

    The graph is exported from the model in memory (PyTorch's TorchScript-based exporter, about a second) and never
    read from a file, so no user file reaches ONNX Runtime. Why: on a 2-core AVX2 CPU its fused, blocked-layout
    kernels run Yolo-Fastest-XL about 1.6x faster than PyTorch's eager mode (docs/BENCHMARKS.md#detector-settings);
    the heads agree within 1e-4."""
    import onnxruntime

    graph = io.BytesIO()
    example = torch.zeros(1, model.channels, model.max_stride * 2, model.max_stride * 2)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on the input-shape check, which the export drops
        torch.onnx.export(model, (example,), graph, dynamo=False, opset_version=13,
                          input_names=["x"], dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}})
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = max(1, threads), 1
    options.log_severity_level = 3  # errors only
    return onnxruntime.InferenceSession(graph.getvalue(), options, providers=["CPUExecutionProvider"])


class DarknetDetector:
    """Object boxes of video frames from a Darknet YOLO model (local .weights with its .cfg; plain arrays only).

    Per frame: grey -> 3 channels, BGR -> RGB, plain bilinear resize to ``input_size`` (width, height; None: the
    cfg's [net] size), /255; batched inference in chunks of ``batch`` frames, in ``channels_last`` memory format
    (depthwise convolutions are many times faster that way on a CPU) under ``torch.inference_mode`` and, for
    ``precision="bf16"``, bfloat16 autocast (worth it only where the device runs bf16 natively); or, for
    ``runtime="onnxruntime"`` (CPU, fp32 only), the same network in ONNX Runtime (``onnxruntime_session``); then
    decoding, classes in ``classes`` (None: all) with score > ``score_thr``, and class-aware NMS at ``nms_iou``.
    """

    def __init__(self, weights: str | Path, *, cfg: str | Path | None = None, classes: list[int] | None = None,
                 score_thr: float = 0.25, nms_iou: float = 0.45, input_size: tuple[int, int] | None = None,
                 batch: int = 16, device: str = "cpu", precision: str = "fp32", runtime: str = "torch"):
        if precision not in PRECISIONS:
            raise DarknetError(f"precision {precision!r} is not one of {PRECISIONS}")
        if runtime not in RUNTIMES:
            raise DarknetError(f"runtime {runtime!r} is not one of {RUNTIMES}")
        if runtime == "onnxruntime" and (torch.device(device).type != "cpu" or precision != "fp32"):
            raise DarknetError(f"runtime 'onnxruntime' runs fp32 on the CPU; got device {device!r}, "
                               f"precision {precision!r} (use runtime 'torch')")
        if batch < 1:
            raise DarknetError(f"batch={batch} must be at least 1")
        self.model = fuse_batch_norm(load_darknet(weights, cfg)).to(device, memory_format=torch.channels_last)
        n_classes = self.model.yolo_layers[0].classes
        if classes is not None and any(not 0 <= k < n_classes for k in classes):
            raise DarknetError(f"{weights}: classes {classes} outside 0..{n_classes - 1}")
        self.net_w, self.net_h = input_size if input_size is not None else (self.model.width, self.model.height)
        self.model.check_size(self.net_h, self.net_w)
        self.weights, self.cfg, self.classes, self.score_thr, self.nms_iou = weights, cfg, classes, score_thr, nms_iou
        self.input_size, self.batch, self.device, self.precision = input_size, batch, device, precision
        self.runtime = runtime
        self.session = onnxruntime_session(self.model, torch.get_num_threads()) if runtime == "onnxruntime" else None

    def _inputs(self, chunk: np.ndarray, net_wh: tuple[int, int]) -> torch.Tensor:
        """(n, 3, height, width) float RGB in [0, 1], channels_last, from uint8 grey or BGR frames."""
        resized = np.stack([cv2.resize(f, net_wh, interpolation=cv2.INTER_LINEAR) for f in chunk])
        rgb = np.repeat(resized[..., None], 3, axis=3) if resized.ndim == 3 else resized[..., ::-1]
        x = torch.from_numpy(np.ascontiguousarray(rgb)).to(self.device).permute(0, 3, 1, 2)
        layout = torch.contiguous_format if self.session is not None else torch.channels_last
        return x.float().div_(255).contiguous(memory_format=layout)

    def _forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The raw head outputs (float32) of one batch, in the configured runtime."""
        if self.session is not None:
            return [torch.from_numpy(o) for o in self.session.run(None, {"x": x.numpy()})]
        return [o.float() for o in self.model(x)]

    def detect_with_scores(self, frames: np.ndarray, input_size: tuple[int, int] | None = None
                           ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per frame: boxes float32 (k, 4) xyxy in original pixels, scores float32 (k,), class ids int64 (k,),
        best first. ``frames``: (T, H, W) grey or (T, H, W, 3) BGR uint8; ``input_size`` (width, height) overrides
        the detector's for this call."""
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or not (frames.ndim == 3 or (frames.ndim == 4 and frames.shape[3] == 3)):
            raise DarknetError(f"frames must be (T,H,W) or (T,H,W,3) uint8, got {frames.shape} {frames.dtype}")
        net_wh = tuple(input_size) if input_size is not None else (self.net_w, self.net_h)
        self.model.check_size(net_wh[1], net_wh[0])
        frame_hw = frames.shape[1:3]
        result = []
        with torch.inference_mode(), torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16,
                                                    enabled=self.precision == "bf16"):
            for start in range(0, len(frames), self.batch):
                outputs = self._forward(self._inputs(frames[start:start + self.batch], net_wh))
                for boxes, scores, class_ids in decode(outputs, self.model, frame_hw, score_thr=self.score_thr,
                                                       classes=self.classes):
                    keep = batched_nms(boxes, scores, class_ids, self.nms_iou)
                    result.append((boxes[keep].cpu().numpy(), scores[keep].cpu().numpy(),
                                   class_ids[keep].cpu().numpy()))
        return result

    def detect(self, frames: np.ndarray, input_size: tuple[int, int] | None = None) -> list[np.ndarray]:
        """Boxes of each frame: (T,H,W) grey or (T,H,W,3) BGR uint8 in, T float32 (k,4) xyxy arrays out."""
        return [boxes for boxes, _, _ in self.detect_with_scores(frames, input_size)]
