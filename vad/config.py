"""The video pipeline's configuration: its settings as dataclasses (defaults here, dataset facts in
``configs/*.yaml``), read with ``image_od.files.settings`` (YAML files, ``--set key=value``); every value's range and
choices are checked (``validate``) before any work starts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from image_od.engine.precision import PRECISIONS
from image_od.files.settings import COUNT_LIMITS, Checks, ConfigError, load_settings


@dataclass
class DataConfig:
    layout: str = "auto"  # auto | ucsd | ucsd_preprocessed | avenue | videos
    grey: bool = True  # grey cubes (the paper's 5x32x32); false keeps BGR colour
    # true: the cloze generators train on cubes held in memory; false: read lazily from the HDF5 cache; auto: in memory
    # up to IN_MEMORY_LIMIT bytes of cubes and flow (a few minutes of footage), lazily beyond (said aloud)
    in_memory: bool | str = "auto"
    num_workers: int = 0  # DataLoader workers when in_memory is false
    avenue_labels: str = "auto"  # Avenue only: masks (official pixel masks) | npy (literature's frame labels) | auto
    bad_frames: str = "error"  # unreadable/truncated frame image: error | skip (repeat the previous good frame)
    # how a cached video is matched to its source: fast (size, modification time, frame count) | content (SHA-256 of
    # the bytes: catches changes that restore sizes and times, and reuses a cache after a copy to another machine)
    fingerprint: str = "fast"
    # frames whose shorter side is below this many pixels are enlarged (bilinear) for extraction, so that the
    # pixel-unit settings (motion blur and areas, speeds in pixels per frame) meet objects at the scale they were
    # made for: each config declares its own frame size here (these defaults are Ped2's settings, made at 240 rows;
    # configs/avenue.yaml 360, demo.yaml 120; Ped1 keeps these), a no-op at that size and above; cube boxes are
    # stored in the frame's own pixels (0: never enlarge; docs/BENCHMARKS.md#min-side)
    min_side: int = 240
    # frames whose shorter side exceeds this many pixels are shrunk (pixel-area averaging) for extraction: HD footage
    # then costs what 480-row footage does and meets the pixel settings nearer their scale; a no-op on every
    # benchmark set (Ped1 158 rows, Ped2 240, Avenue 360); cube boxes are stored in the frame's own pixels (0: never)
    max_side: int = 480


@dataclass
class RegionConfig:
    # any of: motion, detector, file; null: [detector, motion] when detector_weights is set (united per frame, as
    # VEC), else [motion]
    sources: list[str] | None = None
    box_file: str | None = None  # npz of precomputed boxes (source "file")
    train_box_file: str | None = None  # the training split's precomputed boxes (semi-supervised mode with "file")
    motion_blur: int = 3  # cloze-test recipe: Gaussian blur kernel
    motion_threshold: int = 18  # foreground if |I(t-1)-I(t)| + |I(t)-I(t+1)| > threshold
    motion_min_area: int = 100  # (w+1)*(h+1) must exceed this
    motion_max_aspect: float = 10.0
    motion_margin: int = 2
    detector_weights: str | None = None  # Darknet .weights (its .cfg beside it) or ultralytics .pt (source "detector")
    detector_classes: list[int] | None = None  # COCO class ids kept; null: every class (as VEC)
    detector_score: float = 0.4  # keep detections above this (chosen for Yolo-Fastest-XL: docs/BENCHMARKS.md#detector-settings)
    detector_nms_iou: float = 0.45  # non-maximum suppression between boxes of one class (Darknet models)
    detector_min_area: float = 100.0
    detector_imgsz: int = 640  # network input: the frame scaled to this longer side (multiples of 32)
    detector_precision: str = "auto"  # auto (fp32 on a CPU, bf16 on an accelerator where native) | fp32 | bf16
    detector_runtime: str = "auto"  # auto (ONNX Runtime for fp32 on a CPU, else PyTorch) | torch | onnxruntime
    # the detector on every n-th frame, boxes interpolated between; 3 costs less than the flow beside it and kept
    # the frame AUC on Ped2 and Avenue partial (1: every frame; docs/BENCHMARKS.md#detector-settings)
    detector_every: int = 3
    cover_thr: float = 0.6  # drop detector boxes mostly covered by larger ones
    # with detector and motion boxes: join each motion box that touches a detection 4x its area into it (a person's
    # legs or shadow move with the person); an option for crowded scenes, not the default: on Ped2 the motion beside
    # a rider is often the bicycle that makes the object rare (docs/BENCHMARKS.md#join-fragments)
    join_fragments: bool = False
    unsafe_pickle: bool = False  # allow an ultralytics .pt detector: loading it unpickles, which can run its code

    def detector_settings(self) -> dict:
        """The keyword arguments of ``vad.regions.make_detector`` (and ``DarknetBoxes``) these settings give."""
        return dict(classes=self.detector_classes, score_thr=self.detector_score, nms_iou=self.detector_nms_iou,
                    min_area=self.detector_min_area, cover_thr=self.cover_thr, imgsz=self.detector_imgsz)

    def motion_settings(self) -> dict:
        """The keyword arguments of ``vad.regions.video_motion_boxes`` these settings give."""
        return dict(blur_ksize=self.motion_blur, threshold=self.motion_threshold, min_area=self.motion_min_area,
                    max_aspect=self.motion_max_aspect, margin=self.motion_margin)


@dataclass
class CubeConfig:
    size: int = 32
    frames: int = 5


@dataclass
class FlowConfig:
    method: str = "dis"  # dis | farneback | raft (FlowNet2, the paper's, is unavailable here)
    preset: str = "medium"  # DIS preset
    upscale: float = 1.0  # DIS on frames enlarged by this factor, vectors returned in frame pixels
    min_side: int = 0  # DIS: and enlarged at least until the frames' shorter side has this many pixels (0: none)
    # frames between the pair whose flow stands for frame t, in pixels per frame: 1, (t, t+1), or 2, (t-1, t+1):
    # 2 helps every Ped2 source and loses small fast objects, and 3 of 4 Avenue figures (docs/BENCHMARKS.md#flow-gap)
    gap: int = 1
    # the motion energy's own flow pair, frames energy_gap apart, wherever the object moves less than half its box's
    # shorter side over it (else the cube's flow): measures large objects better, keeps small fast ones
    # (vad.cubes.cube_energy; docs/BENCHMARKS.md#energy-gap). The cube's flow, and the scorers reading it, keep `gap`
    energy_gap: int = 2
    # the motion energy as the largest mean flow magnitude over windows of this width/height in the box (0: the box
    # mean): a box of one object keeps its mean, a blob that merged two neighbours gets the faster one's. 0.47: the
    # median shape of Ped2's training-split VEC boxes, label-free (vad.scoring.window_energy;
    # docs/BENCHMARKS.md#energy-window)
    energy_aspect: float = 0.47
    raft_weights: str | None = None
    raft_small: bool = False


@dataclass
class ModelConfig:
    """The generative E3Outlier cloze generators (one conv autoencoder per target)."""

    # the paper's two targets plus flow_hof, a motion target (chosen on the generated development set)
    targets: list[str] = field(default_factory=lambda: ["appearance", "flow", "flow_hof"])
    widths: list[int] = field(default_factory=lambda: [16, 32, 64])  # paper: not published (32/64/128 in paper.yaml)
    epochs: int = 3  # paper: 10 (inlier priority: normal cubes are learned first; docs/BENCHMARKS.md#cloze-epochs)
    batch_size: int = 128
    lr: float = 1e-3
    normalisation: str = "zscore"  # zscore | minmax | none
    precision: str = "auto"  # training: auto (bf16 autocast only where the CPU/GPU runs it natively) | fp32 | bf16
    train_on: str = "test"  # test: transductive on the scored videos (UVAD) | training: the normal training split
    # 0: fit on every cube; N: fit on N cubes drawn with the seed, then score every cube (very long footage)
    max_train_cubes: int = 0


@dataclass
class RefineConfig:
    """Refinement of the generators on contaminated data (docs/METHOD.md)."""

    self_paced: bool = False  # LBR-SPR's self-paced sample weights after a warm-up
    sp_warmup_epochs: int = 1
    sp_shrink: float = 5e-3  # per weighted step: the upper threshold mu + (sp_init_range - t * shrink) sd
    sp_init_range: float = 4.0
    reboot_rounds: int = 0  # E3Outlier's reboot re-weighting: retrain from the same init with w = 1 - minmax(score)


@dataclass
class SelfTrainConfig:
    """Pseudo-label self-training: a cube classifier on the first model's most confident cubes, iterated."""

    rounds: int = 0  # 0 = off
    normal_fraction: float = 0.5  # lowest-scored share taken as normal
    abnormal_fraction: float = 0.02  # highest-scored share taken as abnormal
    epochs: int = 2
    backbone: str = "wrn-10-1"
    combine: str = "sum"  # classifier | sum: z(generative) + z(classifier)


@dataclass
class CubeDiscriminativeConfig:
    """The image core's discriminative E3Outlier on the stacked 5-frame cubes (frames as channels)."""

    use: str = "off"  # off | alone | sum (z(cloze) + z(discriminative))
    backbone: str = "wrn-10-1"
    operations: str = "RA+IA+PR"
    epochs: int = 2
    ops_per_image: int = 2
    score_ops: int = 16
    max_train: int = 20000  # cubes drawn (seeded) to train the classifier; every cube is scored


@dataclass
class AttributeConfig:
    """The object-attribute density scorer (vad/attributes.py): k-NN rarity of each cube's velocity and size."""

    # off (the cloze generators) | alone (the learned score; no generator is trained) | sum (z(cloze) + z(it));
    # alone won leave-one-dataset-out between Ped2 and Avenue partial (docs/BENCHMARKS.md#attribute-density)
    use: str = "alone"
    k: int = 40  # neighbours averaged; chosen by leave one dataset out (docs/BENCHMARKS.md#attribute-k)
    exclude_frames: int = 10  # neighbours from the same video within this many frames never vouch for a cube
    # nor, at any frame, the cubes of its own track (score.track_min_iou): an object that stays anomalous for
    # hundreds of frames must not vouch for itself (docs/BENCHMARKS.md#own-track)
    exclude_track: bool = True
    cleanse: float = 0.1  # share of the most distant cubes dropped from the bank before scoring again
    scale_aware: bool = False  # velocity per box height
    max_bank: int = 50000  # bank rows (a seeded sample beyond this): linear cost on long footage
    # semi-supervised mode: training (the bank is the training videos' cubes, as the semi-supervised literature) |
    # both (the training and the scored cubes, under the transductive exclusion and cleansing: more normal variety
    # where the training footage is short; not comparable with published semi-supervised figures;
    # docs/BENCHMARKS.md#semi-bank)
    semi_bank: str = "training"
    # semi-supervised mode, training bank: add the training cubes' left-right mirror images (a walkway is walked both
    # ways; short normal footage may show one); an option: docs/BENCHMARKS.md#semi-mirror
    semi_mirror: bool = False


@dataclass
class ScoreConfig:
    # fixed: frame score = z(model) + motion_weight * z(motion energy) (paper: motion_weight 0);
    # fast_share: (1 - a) z(model) + a z(motion energy), a = min(1, p / fast_share_full), p = the share of frames
    # holding a cube faster than median + fast_mad MADs of the speed of the cubes moving more than fast_floor
    # pixels per frame (label-free: docs/METHOD.md). fast_reference: scored (that rule) | training (semi-supervised
    # mode with position_norm training only: p = the share of frames whose heuristic exceeds the fast_percentile of
    # the training frames' own heuristic; an option, not the default: docs/BENCHMARKS.md#semi-fusion)
    fusion: str = "fast_share"
    motion_weight: float = 0.5
    fast_mad: float = 3.0
    fast_floor: float = 0.25
    fast_share_full: float = 0.5
    fast_reference: str = "scored"
    fast_percentile: float = 99.0
    # per-position normalisation of the cube scores and motion energy before the frame max: off | run | video (each
    # cube against the cubes of its cell of a position_grid x position_grid partition of the box centres, over the
    # whole run or per video; vad.scoring.position_normalise) | trend (the motion energy only, divided by its trend
    # over image position, a plane fitted to log energy: vad.scoring.position_trend) | training (semi-supervised mode
    # only: the motion energy against the training videos' cubes of its cell that move more than fast_floor) | auto:
    # training in the semi-supervised mode; in the transductive one trend where `perspective` says so, else off
    # (docs/BENCHMARKS.md#semi-position, #perspective)
    position_norm: str = "auto"
    # the camera sees its scene in strong perspective (far objects a third of the near ones or less, as UCSD Ped1's
    # walkway): position_norm auto then takes the trend out of the motion energy in the transductive mode. It helped
    # every source seen in perspective and costs up to 2 points on scenes seen from the side (Ped2, Avenue), so it is
    # a fact each config states (docs/BENCHMARKS.md#perspective). The density's velocity and height attributes lose the
    # same trend (vad.attributes.place_corrected_rows). The semi-supervised mode keeps its training cells;
    # in the transductive one any position_norm but auto or trend beside it is refused
    perspective: bool = False
    position_grid: int = 4
    # each cube's motion energy averaged along its object's track (cubes of neighbouring frames linked one to one
    # by box IoU >= track_min_iou) over track_window frames either side; 0: the cube's own (vad.tracks;
    # docs/BENCHMARKS.md#track-energy). The learned score is left as it is.
    track_window: int = 4
    track_min_iou: float = 0.3
    # slivers of slow objects (cubes touching a cube of the same frame with 4x their area, itself not faster than
    # the fast-share bar: a walker's foot or shadow boxed beside its detection) are left out of the learned score
    # when they hold more than this share of the frames' learned maxima: then they are the footage's texture (a
    # crowd seen close), not its rare events (vad.scoring.slow_slivers; 1: never; docs/BENCHMARKS.md#slivers)
    sliver_share: float = 0.25
    smoothing: str = "gaussian"  # none | mean | gaussian: temporal smoothing of frame scores within each video
    smooth_window: float = 2  # mean: window in frames; gaussian: standard deviation in frames
    per_video: bool = False  # z-score each video's frame scores on their own


@dataclass
class EventConfig:
    """Where the anomalies are: events.csv and plots/top_events.png."""

    # frame score above which a frame is abnormal: a label-free rule (percentile | mad | mixture; vad/events.py)
    # or a number. mixture: chosen on the generated set by frame F1 (docs/BENCHMARKS.md#alarm-thresholds)
    threshold: float | str = "mixture"
    percentile: float = 95.0  # the percentile rule: frames above this percentile of all frame scores
    mad_k: float = 3.0  # the mad rule: frames above median + mad_k * 1.4826 MAD of all frame scores
    min_length: int = 3  # shorter runs of abnormal frames are dropped
    merge_gap: int = 5  # runs closer than this many frames are merged
    top: int = 12  # frames shown in plots/top_events.png


@dataclass
class Config:
    name: str = "video"
    seed: int = 0
    device: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    regions: RegionConfig = field(default_factory=RegionConfig)
    cubes: CubeConfig = field(default_factory=CubeConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    self_train: SelfTrainConfig = field(default_factory=SelfTrainConfig)
    discriminative: CubeDiscriminativeConfig = field(default_factory=CubeDiscriminativeConfig)
    attributes: AttributeConfig = field(default_factory=AttributeConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    events: EventConfig = field(default_factory=EventConfig)


def load_config(paths: str | Path | list[str | Path] | None = None, overrides: list[str] | None = None) -> Config:
    """The defaults, then each YAML file in order (later files override earlier ones), then each ``key=value``;
    every setting checked (``validate``)."""
    return validate(load_settings(Config, paths, overrides))


# ----------------------------------------------------------------------------------------------- validation
REGION_SOURCES = ("motion", "detector", "file")
FLOW_METHODS = ("dis", "farneback", "raft")
DIS_PRESETS = ("ultrafast", "fast", "medium")


def _check_device(checks: Checks, device: str) -> None:
    import torch

    try:
        ok = device == "auto" or torch.device(device).type in ("cpu", "cuda", "mps")
    except (RuntimeError, ValueError):
        ok = False
    checks.need(ok, "device", device, "must be auto, cpu, cuda or cuda:N")


def _check_data_regions(checks: Checks, c: Config) -> None:
    from vad.readers import AVENUE_LABELS, BAD_FRAMES, LAYOUTS

    d, r = c.data, c.regions
    checks.one_of("data.layout", d.layout, ("auto", *LAYOUTS))
    checks.one_of("data.avenue_labels", d.avenue_labels, AVENUE_LABELS)
    checks.one_of("data.bad_frames", d.bad_frames, BAD_FRAMES)
    checks.one_of("data.fingerprint", d.fingerprint, ("fast", "content"))
    checks.one_of("data.in_memory", d.in_memory, (True, False, "auto"))
    checks.non_negative("data.num_workers", d.num_workers)
    checks.need(0 <= d.min_side <= 8192, "data.min_side", d.min_side, "must be from 0 (never enlarge) to 8192 pixels")
    checks.need(d.max_side == 0 or 16 <= d.max_side <= 8192, "data.max_side", d.max_side,
                "must be 0 (never shrink) or from 16 to 8192 pixels")
    checks.need(not (d.min_side and d.max_side) or d.min_side <= d.max_side, "data.max_side", d.max_side,
                f"must not be below data.min_side ({d.min_side}, the frame size the config's pixel settings "
                f"were made for; set data.min_side too, e.g. data.min_side=0 to never enlarge)")
    checks.subset("regions.sources", r.sources, REGION_SOURCES)
    checks.need("file" not in r.sources or bool(r.box_file), "regions.box_file", r.box_file,
                "must be set (or --boxes given) when regions.sources has 'file'")
    checks.need("detector" not in r.sources or bool(r.detector_weights), "regions.detector_weights",
                r.detector_weights, "must be set when regions.sources has 'detector'")
    checks.need(r.motion_blur > 0 and r.motion_blur % 2 == 1, "regions.motion_blur", r.motion_blur,
                "must be a positive odd kernel size")
    for key in ("motion_threshold", "motion_min_area", "motion_margin", "detector_min_area"):
        checks.non_negative(f"regions.{key}", getattr(r, key))
    checks.positive("regions.motion_max_aspect", r.motion_max_aspect)
    checks.need(r.detector_imgsz >= 32 and r.detector_imgsz % 32 == 0, "regions.detector_imgsz", r.detector_imgsz,
                "must be a positive multiple of 32")
    checks.need(0 < r.detector_nms_iou <= 1, "regions.detector_nms_iou", r.detector_nms_iou, "must be within (0, 1]")
    checks.one_of("regions.detector_precision", r.detector_precision, ("auto", "fp32", "bf16"))
    checks.one_of("regions.detector_runtime", r.detector_runtime, ("auto", "torch", "onnxruntime"))
    checks.need(r.detector_classes is None or (bool(r.detector_classes) and min(r.detector_classes) >= 0),
                "regions.detector_classes", r.detector_classes, "must be null (every class) or class ids >= 0")
    checks.need(1 <= r.detector_every <= 16, "regions.detector_every", r.detector_every, "must be within 1..16")
    checks.need(0 <= r.detector_score <= 1, "regions.detector_score", r.detector_score, "must be within [0, 1]")
    checks.need(0 < r.cover_thr <= 1, "regions.cover_thr", r.cover_thr, "must be within (0, 1]")
    checks.need(not r.join_fragments or {"detector", "motion"} <= set(r.sources), "regions.join_fragments",
                r.join_fragments, "joins motion boxes into detections: it needs both in regions.sources")


def _check_cubes_flow(checks: Checks, c: Config) -> None:
    cu, fl = c.cubes, c.flow
    checks.need(cu.frames >= 3 and cu.frames % 2 == 1, "cubes.frames", cu.frames,
                "must be odd and at least 3 (the middle frame is inferred from the others)")
    step = 2 ** max(len(c.model.widths), 1)  # one stride-2 convolution per width
    checks.need(cu.size > 0 and cu.size % step == 0, "cubes.size", cu.size,
                f"must be a positive multiple of {step} (2 ** len(model.widths))")
    checks.one_of("flow.method", fl.method, FLOW_METHODS)
    if fl.method == "dis":
        checks.one_of("flow.preset", fl.preset, DIS_PRESETS)
    checks.positive("flow.upscale", fl.upscale)
    checks.need(0 <= fl.min_side <= 8192, "flow.min_side", fl.min_side, "must be from 0 (none) to 8192 pixels")
    checks.need(1 <= fl.gap <= 4, "flow.gap", fl.gap, "must be within 1..4 frames")
    checks.need(1 <= fl.energy_gap <= 4, "flow.energy_gap", fl.energy_gap, "must be within 1..4 frames")
    checks.need(math.isfinite(fl.energy_aspect) and 0 <= fl.energy_aspect <= 10, "flow.energy_aspect",
                fl.energy_aspect, "must be 0 (the box mean) or a width/height up to 10")
    checks.need(fl.method != "raft" or bool(fl.raft_weights), "flow.raft_weights", fl.raft_weights,
                "must be set when flow.method is raft")


def _check_backbone(checks: Checks, key: str, name: str) -> None:
    import torch

    from image_od.networks.backbones import make_backbone

    try:
        with torch.random.fork_rng(devices=[]):  # building a net draws from the global generator
            make_backbone(name, 1, 2)
        ok, why = True, ""
    except ValueError as err:
        ok, why = False, f" ({err})"
    checks.need(ok, key, name, f"is not a known backbone{why}")


def _check_refinements(checks: Checks, c: Config) -> None:
    """The learning modes beside the cloze generators: training split, refinement, self-training, discriminative."""
    from image_od.operations.discriminative import operation_set

    m, rf, st, d = c.model, c.refine, c.self_train, c.discriminative
    checks.one_of("model.train_on", m.train_on, ("test", "training"))
    checks.need(m.train_on != "training" or "file" not in c.regions.sources or bool(c.regions.train_box_file),
                "regions.train_box_file", c.regions.train_box_file,
                "must be set (--train-boxes) when model.train_on=training and the boxes come from a file")
    for key in ("sp_warmup_epochs", "sp_shrink", "reboot_rounds"):
        checks.non_negative(f"refine.{key}", getattr(rf, key))
    checks.positive("refine.sp_init_range", rf.sp_init_range)
    checks.non_negative("self_train.rounds", st.rounds)
    checks.need(0 < st.normal_fraction < 1, "self_train.normal_fraction", st.normal_fraction, "must be within (0, 1)")
    checks.need(0 < st.abnormal_fraction < 1 and st.normal_fraction + st.abnormal_fraction <= 1,
                "self_train.abnormal_fraction", st.abnormal_fraction,
                "must be within (0, 1), and normal_fraction + abnormal_fraction <= 1")
    checks.count("self_train.epochs", st.epochs, COUNT_LIMITS["epochs"])
    checks.one_of("self_train.combine", st.combine, ("classifier", "sum"))
    checks.one_of("discriminative.use", d.use, ("off", "alone", "sum"))
    for key in ("epochs", "ops_per_image", "score_ops", "max_train"):
        checks.positive(f"discriminative.{key}", getattr(d, key))
    try:
        operation_set(d.operations)
    except ValueError as err:
        checks.need(False, "discriminative.operations", d.operations, f"is not valid ({err})")
    _check_backbone(checks, "self_train.backbone", st.backbone)
    _check_backbone(checks, "discriminative.backbone", d.backbone)


def _check_events(checks: Checks, c: Config) -> None:
    from vad.scoring import SMOOTHING

    s, e = c.score, c.events
    checks.one_of("score.smoothing", s.smoothing, SMOOTHING)
    from vad.events import THRESHOLD_RULES

    checks.need(e.threshold in THRESHOLD_RULES if isinstance(e.threshold, str) else math.isfinite(e.threshold),
                "events.threshold", e.threshold, f"must be one of {list(THRESHOLD_RULES)} or a finite number")
    checks.positive("events.mad_k", e.mad_k)
    checks.need(0 < e.percentile < 100, "events.percentile", e.percentile, "must be within (0, 100)")
    checks.positive("events.min_length", e.min_length)
    checks.non_negative("events.merge_gap", e.merge_gap)
    checks.non_negative("events.top", e.top)


def _check_model_score(checks: Checks, c: Config) -> None:
    from image_od.e3outlier.generative import NORMALISATIONS
    from vad.cloze import TARGETS

    m, s = c.model, c.score
    checks.subset("model.targets", m.targets, TARGETS)
    checks.need(bool(m.widths) and all(w > 0 for w in m.widths), "model.widths", m.widths,
                "must be a non-empty list of positive integers")
    checks.count("model.epochs", m.epochs, COUNT_LIMITS["epochs"])
    checks.count("model.batch_size", m.batch_size, COUNT_LIMITS["batch_size"])
    checks.positive("model.lr", m.lr)
    checks.one_of("model.normalisation", m.normalisation, NORMALISATIONS)
    checks.one_of("model.precision", m.precision, PRECISIONS)
    checks.need(m.max_train_cubes >= 0, "model.max_train_cubes", m.max_train_cubes, "must be 0 (all cubes) or positive")
    checks.need(math.isfinite(s.motion_weight), "score.motion_weight", s.motion_weight, "must be a finite number")
    checks.positive("score.smooth_window", s.smooth_window)
    checks.one_of("score.fusion", s.fusion, ("fixed", "fast_share"))
    checks.one_of("score.position_norm", s.position_norm, ("off", "run", "video", "trend", "training", "auto"))
    checks.need(s.position_norm != "training" or m.train_on == "training", "score.position_norm", s.position_norm,
                "needs the semi-supervised mode (model.train_on=training): its reference is the training videos")
    checks.need(not s.perspective or m.train_on == "training" or resolved_position_norm(c) == "trend",
                "score.perspective", s.perspective, "asks for the motion energy's trend over position, but "
                f"score.position_norm is {s.position_norm}: leave it auto or set trend")
    checks.count("score.position_grid", s.position_grid, 64)
    checks.positive("score.fast_mad", s.fast_mad)
    checks.need(s.fast_floor >= 0, "score.fast_floor", s.fast_floor, "must be 0 or more (pixels per frame)")
    checks.need(0 < s.fast_share_full <= 1, "score.fast_share_full", s.fast_share_full, "must be within (0, 1]")
    checks.need(0 <= s.sliver_share <= 1, "score.sliver_share", s.sliver_share, "must be within [0, 1]")
    checks.need(0 < s.fast_percentile < 100, "score.fast_percentile", s.fast_percentile, "must be within (0, 100)")
    checks.one_of("score.fast_reference", s.fast_reference, ("scored", "training"))
    checks.need(s.fast_reference == "scored" or (m.train_on == "training" and s.position_norm in ("auto", "training")),
                "score.fast_reference", s.fast_reference,
                "training needs the semi-supervised mode (model.train_on=training) with score.position_norm auto or "
                "training: the training videos' frames are scored by the heuristic measured against them")
    checks.non_negative("score.track_window", s.track_window)
    checks.need(0 < s.track_min_iou <= 1, "score.track_min_iou", s.track_min_iou, "must be within (0, 1]")
    a = c.attributes
    checks.one_of("attributes.use", a.use, ("off", "alone", "sum"))
    checks.need(a.use != "alone" or (c.discriminative.use == "off" and c.self_train.rounds == 0), "attributes.use",
                a.use, "alone replaces the cloze generators: it needs discriminative.use=off and self_train.rounds=0")
    for key in ("k", "max_bank"):
        checks.positive(f"attributes.{key}", getattr(a, key))
    checks.non_negative("attributes.exclude_frames", a.exclude_frames)
    checks.need(0 <= a.cleanse < 1, "attributes.cleanse", a.cleanse, "must be within [0, 1)")
    checks.one_of("attributes.semi_bank", a.semi_bank, ("training", "both"))
    checks.need(a.semi_bank == "training" or m.train_on == "training", "attributes.semi_bank", a.semi_bank,
                "both needs the semi-supervised mode (model.train_on=training): it adds the training videos' cubes")
    checks.need(not a.semi_mirror or (m.train_on == "training" and a.semi_bank == "training"), "attributes.semi_mirror",
                a.semi_mirror, "mirrors the training bank: it needs model.train_on=training and semi_bank=training")


def resolved_position_norm(config: Config) -> str:
    """``score.position_norm`` with ``auto`` resolved: training in the semi-supervised mode; in the transductive one
    trend where ``score.perspective`` says so, else off. config.yaml keeps ``auto``, so that a rescoring that changes
    ``score.perspective`` resolves it anew; metrics.json records what it resolved to."""
    mode = config.score.position_norm
    if mode != "auto":
        return mode
    return "training" if config.model.train_on == "training" else "trend" if config.score.perspective else "off"


def validate(config: Config) -> Config:
    """Check every setting's range and choices before any work; raise one ConfigError that lists every problem."""
    r = config.regions
    if r.sources is None:
        r.sources = ["detector", "motion"] if r.detector_weights else ["motion"]
    checks = Checks()
    checks.need(0 <= config.seed < 2 ** 32, "seed", config.seed, "must be within 0 .. 2**32-1")
    _check_device(checks, config.device)
    _check_data_regions(checks, config)
    _check_cubes_flow(checks, config)
    _check_model_score(checks, config)
    _check_refinements(checks, config)
    _check_events(checks, config)
    if checks.problems:
        raise ConfigError("invalid settings: " + "; ".join(checks.problems))
    return config
