"""Benchmark the object detector of the video regions: speed beside the flow it sits next to, and box quality.

Speed (``--speed``): on the same frames, in one process, frames per second of decoding, of DIS flow (the pipeline's
flow passes: the cubes' pairs, ``flow.gap``, and the motion energy's, ``flow.energy_gap``, where it differs; one pair
at a time and as many at once as the pipeline computes) and of
each detector setting (best of three interleaved rounds); the CPU and the reference workload are recorded.

Agreement (``--agreement``, label-free, any footage): the boxes of ``regions.detector_every`` N against detecting every
frame.

Box quality (``--quality``): on a UCSD Ped2 split, the detector's boxes (alone, and united with motion boxes as the
pipeline's ``regions.sources: [detector, motion]`` does) against the precomputed VEC boxes (Cascade R-CNN united
with motion boxes): recall of VEC boxes at IoU >= 0.5, the share of our boxes that match a VEC box, their F1, and
boxes per frame, for each score threshold. These need no anomaly label; the default is the setting with the best
F1 of the united boxes on the TRAINING split, a rule fixed before looking. ``--picture`` draws the detector's boxes
on one abnormal frame of each test video (the labels only pick which frame is shown).

  python tools/bench_detector.py --weights ../shared/weights/yolo-fastest-1.1-coco/yolo-fastest-1.1-xl.weights \\
      --root ../shared/data/ucsd_ped2 --vec ../shared/data/ucsd_ped2_vec_boxes --speed --quality --picture \\
      --out runs/bench_detector
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import torch
from torchvision.ops import box_iou

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from image_od.engine.precision import cpu_has_native_bf16, cpu_model  # noqa: E402
from pipelines.run_env import reference_workload_s  # noqa: E402
from pipelines.video.stages import EXTRACT_CHUNK  # noqa: E402
from vad.config import load_config  # noqa: E402
from vad.darknet import DarknetDetector  # noqa: E402
from vad.flow import flow_pairs, make_flow  # noqa: E402
from vad.readers import open_dataset, open_training_split  # noqa: E402
from vad.regions import (  # noqa: E402
    DarknetBoxes,
    filter_boxes,
    keyframe_detections,
    load_box_file,
    network_size,
    remove_covered,
    video_motion_boxes,
)

PED2_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "ucsd_ped2.yaml"


def _time(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def pipeline_boxes(weights: Path, r, *, imgsz: int, runtime: str, precision: str = "fp32",
                   batch: int = 2) -> DarknetBoxes:
    """The detector as the pipeline builds it from region settings ``r`` (``RegionConfig``): threshold, NMS, area
    floor, covered-box removal and classes of ``r``, at ``imgsz``."""
    return DarknetBoxes(weights, **{**r.detector_settings(), "imgsz": imgsz}, precision=precision, runtime=runtime,
                        batch=batch)


def between_key_frames(found: list, every: int, mode: str) -> tuple[list, int]:
    """A video's per-frame detections as the pipeline keeps them with ``regions.detector_every``, and the number of
    frames the detector ran on: chunk by chunk (``EXTRACT_CHUNK`` frames), ``keyframe_detections`` (``interpolate``,
    the pipeline's), or the detector on every ``every``-th frame and its boxes held on the frames after it
    (``hold``, the pipeline's rule until 2026-12-06, kept here for comparison)."""
    out, detected = [], 0
    for start in range(0, len(found), EXTRACT_CHUNK):
        index = np.arange(start, min(start + EXTRACT_CHUNK, len(found)))
        if mode == "interpolate":
            seen = []
            out += keyframe_detections(lambda keys: seen.extend(keys) or [found[i] for i in keys], index, every)
            detected += len(seen)
        else:
            out += [found[start + t // every * every] for t in range(len(index))]
            detected += len(range(0, len(index), every))
    return out, detected


def speed(weights: list[Path], root: str, config: Path, sizes: list[int], n_frames: int, batches: list[int],
          everies: list[int], runtimes: list[str]) -> list[dict]:
    """Frames per second of decoding, DIS flow and each (model, input size, runtime, precision, batch,
    detector_every) on the same frames: the pipeline's detector (``DarknetBoxes``, region settings of ``config``)
    run through ``keyframe_detections`` chunk by chunk, as extraction runs it; ``detected`` is the share of the
    frames the detector ran on."""
    settings = load_config(config)
    r, fl = settings.regions, settings.flow
    video = open_dataset(root)[0]
    decode_s = _time(lambda: [f for _, f in zip(range(n_frames), video.iter_frames(grey=True))], repeat=3)
    frames = np.stack([f for _, f in zip(range(n_frames), video.iter_frames(grey=True))])
    rows = [{"what": "decode (JPEG, grey)", "fps": n_frames / decode_s}]
    flow_s = 0.0
    for gap in sorted({fl.gap, fl.energy_gap}):  # the pipeline's DIS passes, one pair per frame each
        pairs = flow_pairs(n_frames, gap)
        # one pair at a time, then as the pipeline runs it: as many pairs at once as torch has threads (the last)
        for workers in sorted({1, torch.get_num_threads()}):
            flow = make_flow("dis", preset=fl.preset, workers=workers)
            seconds = _time(lambda: flow(frames, pairs), repeat=3)
            rows.append({"what": f"DIS flow ({fl.preset}), frames {gap} apart, {workers} pair(s) at once",
                         "fps": n_frames / seconds})
        flow_s += seconds
    rows.append({"what": "decode + DIS flow (every pass the pipeline runs)", "fps": n_frames / (decode_s + flow_s)})
    # (runtime, precision, channels_last): each precision the CPU runs natively in PyTorch, PyTorch without
    # channels_last for comparison, and ONNX Runtime (fp32)
    variants = [("torch", p, True) for p in (["fp32", "bf16"] if cpu_has_native_bf16() else ["fp32"])]
    variants += [("torch", "fp32", False), ("onnxruntime", "fp32", True)]
    variants = [v for v in variants if v[0] in runtimes]
    chunks = [frames[start:start + EXTRACT_CHUNK] for start in range(0, n_frames, EXTRACT_CHUNK)]
    runs, shares = {}, {}  # name -> timed call; timed in interleaved rounds, so that a busy host slows all alike
    for w in weights:
        for imgsz in sizes:
            for runtime, precision, channels_last in variants:
                for b in batches if channels_last else batches[:1]:
                    boxes = pipeline_boxes(w, r, imgsz=imgsz, runtime=runtime, precision=precision, batch=b)
                    det = boxes.detector
                    if not channels_last:  # model and input in the default layout, for comparison
                        det.model = det.model.to(memory_format=torch.contiguous_format)
                        to_channels_last = det._inputs
                        det._inputs = lambda chunk, size, f=to_channels_last: f(chunk, size).contiguous()
                    boxes.detect(frames[:b])  # warm-up
                    size = network_size(frames.shape[1:3], imgsz)
                    for every in everies if channels_last else [1]:
                        name = (f"{w.stem} {size[0]}x{size[1]} {runtime} {precision} batch {b}"
                                f"{'' if channels_last else ' (not channels_last)'}"
                                f"{f', detector_every {every}' if every > 1 else ''}")
                        seen = []
                        for chunk in chunks:
                            keyframe_detections(lambda x: seen.extend(x) or boxes.detect(x), chunk, every)
                        shares[name] = len(seen) / n_frames
                        runs[name] = lambda boxes=boxes, every=every: [
                            keyframe_detections(boxes.detect, chunk, every) for chunk in chunks]
    best = {name: float("inf") for name in runs}
    for _ in range(3):
        for name, run in runs.items():
            best[name] = min(best[name], _time(run))
    for name, seconds in best.items():
        rows.append({"what": name, "fps": n_frames / seconds, "detected": shares[name]})
        print(rows[-1], flush=True)
    return rows


def _match(ours: np.ndarray, ref: np.ndarray, thr: float = 0.5) -> tuple[int, int]:
    """(reference boxes matched by one of ours at IoU >= thr, our boxes that match a reference box)."""
    if len(ours) == 0 or len(ref) == 0:
        return 0, 0
    iou = box_iou(torch.from_numpy(ours), torch.from_numpy(ref)).numpy()
    return int((iou.max(0) >= thr).sum()), int((iou.max(1) >= thr).sum())


def agreement(weights: Path, root: str, config: Path, split: str, everies: list[int], runtime: str,
              video_step: int = 1) -> list[dict]:
    """Label-free, on any footage: how far the boxes of ``detector_every`` N (``keyframe_detections``) are from
    detecting every frame: recall and share of the every-frame boxes at IoU >= 0.5, their F1, and the share of the
    frames the detector ran on. Every ``video_step``-th video of the split."""
    settings = load_config(config)
    r = settings.regions
    boxes = pipeline_boxes(weights, r, imgsz=r.detector_imgsz, runtime=runtime)
    videos = (open_training_split(root) if split == "training" else open_dataset(root))[::video_step]
    every_frame = [boxes.detect(v.read_frames(grey=settings.data.grey)) for v in videos]
    rows = []
    for every in everies:
        stats = np.zeros(5)  # reference boxes, ours, reference matched, ours matching, frames detected
        for found in every_frame:
            kept, detected = between_key_frames(found, every, "interpolate")
            stats[4] += detected
            for ours, ref in zip(kept, found):
                stats[:4] += [len(ref), len(ours), *_match(ours, ref)]
        recall, share = stats[2] / max(stats[0], 1), stats[3] / max(stats[1], 1)
        rows.append({"root": root, "split": split, "detector_every": every,
                     "detected": stats[4] / sum(len(f) for f in every_frame), "recall": recall, "share": share,
                     "f1": 2 * recall * share / max(recall + share, 1e-9)})
        print({k: round(float(x), 4) if isinstance(x, float) else x for k, x in rows[-1].items()}, flush=True)
    return rows


def quality(weights: Path, root: str, vec: Path, split: str, sizes: list[int], thresholds: list[float],
            stride: int, batch: int, precision: str, everies: list[int], runtime: str = "torch",
            modes: tuple[str, ...] = ("interpolate",)) -> list[dict]:
    """Box statistics against the VEC boxes for every (input size, score threshold, detector_every, boxes between
    key frames), on every ``stride``-th frame."""
    r = load_config(PED2_CONFIG).regions
    videos = open_training_split(root) if split == "training" else open_dataset(root)
    vec_boxes = load_box_file(vec / f"ped2_{'train' if split == 'training' else 'test'}_boxes.npz",
                              [v.frame_count() for v in videos])
    rows = []
    for imgsz in sizes:
        det = DarknetDetector(weights, score_thr=min(thresholds), batch=batch, precision=precision, runtime=runtime)
        # frames, VEC boxes, ours, united, detector's and united recall matches, united share matches, detected
        stats = {(t, e, m): np.zeros(8) for t in thresholds for e in everies for m in (modes if e > 1 else modes[:1])}
        t0 = time.perf_counter()
        for v, ref_video in zip(videos, vec_boxes):
            frames = v.read_frames(grey=True)
            size = network_size(frames.shape[1:3], imgsz)
            found = det.detect_with_scores(frames, input_size=size)
            for thr, every, mode in stats:
                boxes = [remove_covered(filter_boxes(b, s, score_thr=thr, min_area=r.detector_min_area), r.cover_thr)
                         for b, s, _ in found]
                kept, detected = between_key_frames(boxes, every, mode)
                motion = video_motion_boxes(frames, exclude=kept, **r.motion_settings())
                for t in range(0, len(frames), stride):
                    union = np.concatenate([kept[t], motion[t]])
                    rec_d, prec_d = _match(kept[t], ref_video[t])
                    rec_u, prec_u = _match(union, ref_video[t])
                    stats[thr, every, mode] += [1, len(ref_video[t]), len(kept[t]), len(union), rec_d, rec_u, prec_u, 0]
                stats[thr, every, mode][7] += detected / stride  # frames the detector ran on, per measured frame
        seconds = time.perf_counter() - t0
        for (thr, every, mode), (n, n_ref, n_det, n_union, rec_d, rec_u, prec_u, n_detected) in stats.items():
            recall, share = rec_u / n_ref, prec_u / max(n_union, 1)
            rows.append({"split": split, "model": weights.stem, "imgsz": imgsz, "precision": precision,
                         "runtime": runtime, "score_thr": thr,
                         "detector_every": every, "between": mode if every > 1 else "",
                         "detected": n_detected / n,
                         "vec_per_frame": n_ref / n, "det_per_frame": n_det / n, "union_per_frame": n_union / n,
                         "recall_det": rec_d / n_ref, "recall_union": recall, "precision_union": share,
                         "f1_union": 2 * recall * share / max(recall + share, 1e-9), "seconds": seconds})
            print({k: round(float(x), 3) if isinstance(x, float) else x for k, x in rows[-1].items()}, flush=True)
    return rows


def picture(weights: Path, root: str, imgsz: int, score_thr: float, path: Path) -> None:
    """One abnormal frame of each test video (the middle of its first abnormal run) with the detector's boxes and
    class names; the frame labels only choose which frame is drawn."""
    names = (Path(weights).parent / "coco.names").read_text().split("\n")
    det = DarknetDetector(weights, score_thr=score_thr)
    tiles = []
    for v in open_dataset(root):
        abnormal = np.flatnonzero(v.labels)
        t = int(abnormal[min(len(abnormal) // 4, len(abnormal) - 1)]) if len(abnormal) else 0
        frames = v.read_frames(grey=True)
        boxes, scores, classes = det.detect_with_scores(frames[t:t + 1], input_size=network_size(frames.shape[1:3],
                                                                                                 imgsz))[0]
        img = cv2.cvtColor(frames[t], cv2.COLOR_GRAY2BGR)
        for (x1, y1, x2, y2), s, c in zip(boxes, scores, classes):
            colour = (0, 200, 0) if c == 0 else (0, 0, 255)
            cv2.rectangle(img, (int(x1), int(y1)), (int(x2), int(y2)), colour, 1)
            if c != 0:
                cv2.putText(img, f"{names[c]} {s:.2f}", (int(x1), max(int(y1) - 2, 8)), cv2.FONT_HERSHEY_SIMPLEX,
                            0.35, colour, 1)
        cv2.putText(img, f"test {v.name} frame {t}", (4, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1)
        tiles.append(img)
    rows = [np.hstack(tiles[i:i + 4]) for i in range(0, len(tiles), 4)]
    cv2.imwrite(str(path), np.vstack(rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", nargs="+", required=True, type=Path, help="Darknet .weights (the .cfg beside it)")
    p.add_argument("--root", required=True, help="UCSD Ped2 root (preprocessed layout)")
    p.add_argument("--vec", type=Path, help="folder of ped2_{test,train}_boxes.npz (for --quality)")
    p.add_argument("--sizes", nargs="+", type=int, default=[320, 416])
    p.add_argument("--thresholds", nargs="+", type=float, default=[0.1, 0.2, 0.3, 0.4, 0.5])
    p.add_argument("--splits", nargs="+", default=["training"], choices=("training", "test"))
    p.add_argument("--precisions", nargs="+", default=["fp32"], choices=("fp32", "bf16"))
    p.add_argument("--stride", type=int, default=1, help="measure box quality on every N-th frame")
    p.add_argument("--every", nargs="+", type=int, default=[1],
                   help="regions.detector_every values: the detector on every N-th frame (key frames)")
    p.add_argument("--between", nargs="+", default=["interpolate"], choices=("interpolate", "hold"),
                   help="--quality: boxes of the frames between key frames, interpolated (the pipeline's) or held")
    p.add_argument("--frames", type=int, default=120, help="frames for --speed")
    p.add_argument("--batch", nargs="+", type=int, default=[4],
                   help="frames per forward pass (--speed measures each; --quality uses the first)")
    p.add_argument("--runtime", default="torch", choices=("torch", "onnxruntime"), help="runtime for --quality")
    p.add_argument("--runtimes", nargs="+", default=["torch", "onnxruntime"], choices=("torch", "onnxruntime"),
                   help="runtimes --speed compares")
    p.add_argument("--config", type=Path, default=PED2_CONFIG, help="region settings for --speed (dataset config)")
    p.add_argument("--speed", action="store_true")
    p.add_argument("--quality", action="store_true")
    p.add_argument("--picture", action="store_true")
    p.add_argument("--agreement", action="store_true",
                   help="label-free: the boxes of each --every against detecting every frame, on --root's --splits "
                        "(any dataset; region settings of --config)")
    p.add_argument("--video-step", type=int, default=1, help="--agreement on every N-th video")
    p.add_argument("--picture-size", type=int, default=416)
    p.add_argument("--picture-score", type=float, default=0.2)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    result = {"date": datetime.now().isoformat(timespec="seconds"), "cpu": cpu_model(),
              "machine": platform.machine(), "torch_threads": torch.get_num_threads(),
              "reference_workload_s": reference_workload_s(), "command": " ".join(sys.argv)}
    if args.speed:
        result["speed"] = speed(args.weights, args.root, args.config, args.sizes, args.frames, args.batch, args.every,
                                args.runtimes)
    if args.quality:
        result["quality"] = [row for w in args.weights for split in args.splits for precision in args.precisions
                             for row in quality(w, args.root, args.vec, split, args.sizes, args.thresholds,
                                                args.stride, args.batch[0], precision, args.every, args.runtime,
                                                tuple(args.between))]
    if args.agreement:
        result["agreement"] = [row for split in args.splits for row in agreement(
            args.weights[0], args.root, args.config, split, args.every, args.runtime, args.video_step)]
    if args.picture:
        picture(args.weights[0], args.root, args.picture_size, args.picture_score, args.out / "ped2_test_detections.png")
    (args.out / "bench_detector.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k not in ("quality",)}, indent=1))


if __name__ == "__main__":
    main()
