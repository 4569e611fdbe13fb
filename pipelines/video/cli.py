"""``vad``: unsupervised video abnormal-event detection (object-attribute density or generative E3Outlier).

Stages share a run folder (``--out``): ``extract`` (boxes, cubes, flow -> cache), ``train`` (the learned score),
``score`` (cube and frame scores), ``eval`` (frame-level AUC/EER), ``plot``; ``run`` does them all and ``demo``
does them all on a generated dataset.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from image_od.engine import distributed
from image_od.engine.training import resolve_device
from pipelines.cli_errors import report_errors
from pipelines.video import run_folder
from pipelines.video import stages as P
from pipelines.video.plots import plot_run
from pipelines.video.report import perspective_hint
from vad.config import load_config

EXAMPLES = """examples:
  vad run --config configs/ucsd_ped2.yaml --root ../shared/data/ucsd_ped2 \\
          --boxes ../shared/data/ucsd_ped2_vec_boxes/ped2_test_boxes.npz --out runs/ped2
  vad run --config configs/ucsd_ped2.yaml --root DATA --out runs/x --set attributes.use=off --set model.epochs=5
  vad run --config configs/ucsd_ped2.yaml --root ../shared/data/ucsd_ped2 \\
          --detector ../shared/weights/yolo-fastest-1.1-coco/yolo-fastest-1.1-xl.weights --out runs/ped2_det
  vad run --videos my_videos/ --out runs/mine          # unlabeled: scores and plots, no AUC
  vad run --videos my_videos/ --train-videos normal/ --out runs/mine   # learn what is normal from normal/
  vad report --out runs/mine --render-top 3            # runs/mine/report.html, the 3 highest alarms rendered
  vad demo --out runs/demo                             # generated dataset, no download
  torchrun --nproc_per_node=8 -m pipelines.video.cli extract --videos cams/ --out runs/cams   # 8 processes

Under torchrun, extract and score share the videos out between the processes and train trains data-parallel
(docs/SCALING.md); the other commands run in one process.
"""
SHARDED = ("extract", "train", "score", "run")


def _add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", action="append", help="YAML config (configs/*.yaml); repeat to layer files, e.g. "
                   "--config configs/avenue.yaml --config configs/paper.yaml; defaults fill missing keys")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--root", help="labelled dataset root (UCSD official/preprocessed or Avenue layout)")
    src.add_argument("--videos", nargs="+", metavar="PATH",
                     help="unlabeled videos: video files, folders of frames or folders of videos (one or more; "
                          "a shell glob such as clips/*.mp4 works)")
    regions = p.add_mutually_exclusive_group()
    regions.add_argument("--boxes", help="precomputed boxes (.npz: boxes_xyxy, global_frame, video_lengths); "
                                         "replaces the configured region sources")
    regions.add_argument("--detector", metavar="WEIGHTS",
                         help="object detector: Darknet .weights with its .cfg beside it (same name), or an "
                              "ultralytics .pt (needs regions.unsafe_pickle=true); regions are then the detector's "
                              "boxes united with motion boxes (regions.sources=[detector, motion])")
    p.add_argument("--train-boxes", help="the training split's precomputed boxes (with --boxes and --train-on training)")
    p.add_argument("--train-on", choices=("test", "training"),
                   help="test: learn from the unlabeled videos that are scored (UVAD, the default); training: learn "
                        "from the dataset's normal training videos (semi-supervised); same as model.train_on")
    p.add_argument("--train-videos", nargs="+", metavar="PATH",
                   help="normal footage of the same camera(s) to learn from (video files, folders of frames or of "
                        "videos; one or more), instead of a dataset's training split: the semi-supervised mode for "
                        "any videos; implies --train-on training")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set model.epochs=5 (repeatable)")
    p.add_argument("--cache", default="cache", help="cache root for extracted cubes (default: ./cache)")


def _config(args):
    overrides = list(args.overrides)
    if args.boxes:
        overrides += [f"regions.box_file={Path(args.boxes).resolve()}", "regions.sources=[file]"]
    if args.detector:  # before the user's --set, which may still choose other sources
        overrides[:0] = [f"regions.detector_weights={Path(args.detector).resolve()}",
                         "regions.sources=[detector, motion]"]
    if args.train_boxes:
        overrides.append(f"regions.train_box_file={Path(args.train_boxes).resolve()}")
    if args.train_videos and args.train_on == "test":
        raise ValueError("--train-videos gives the normal footage of the semi-supervised mode: it cannot go with "
                         "--train-on test")
    if args.train_on or args.train_videos:
        overrides.append(f"model.train_on={args.train_on or 'training'}")
    return load_config(args.config, overrides)


def _print_metrics(out: Path, metrics: dict) -> None:
    if "auc_micro" in metrics:
        heuristic, rule = metrics["heuristic_auc_micro"], metrics["motion_rule_auc_micro"]
        how = ("its trend over image position taken out" if metrics["position_norm"] == "trend"
               else "position-normalised")
        print(f"frame AUC micro {metrics['auc_micro']:.4f}  macro {metrics['auc_macro']:.4f}  EER {metrics['eer']:.4f}"
              f"  | learned score alone {metrics['model_auc_micro']:.4f}  | motion-energy heuristic {heuristic:.4f}"
              + (f" ({how}; plain rule {rule:.4f})" if metrics["position_norm"] != "off" else ""))
    else:
        print(metrics.get("note", ""))
    hint = perspective_hint(metrics.get("fusion", {}))
    if hint:
        print(hint)
    if metrics.get("timings"):
        print("timings (s): " + ", ".join(f"{k} {v}" for k, v in metrics["timings"].items()))
    print(f"results: {out / 'metrics.json'}, {out / 'frame_scores.csv'}; plots: {out / 'plots'}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vad", description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_: str, source: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        if source:
            _add_source_args(p)
        p.add_argument("--out", required=True, help="run folder")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        p.add_argument("--debug", action="store_true", help="show the traceback of any error")
        return p

    command("extract", "find foreground boxes, cut cubes and flow into the cache", source=True)
    command("train", "fit the learned cube score on the run's cubes (transductive): the attribute density, or "
                     "the cloze generators with attributes.use=off")
    score = command("score", "turn the run's cube errors into cube, frame and event scores")
    score.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="change a score.* or events.* setting of the run first (fusion, smoothing, "
                            "per-video normalisation, event threshold): rescoring needs no retraining, except "
                            "score.perspective, which refits the attribute density first (seconds)")
    command("eval", "frame-level AUC (micro, macro), EER and the motion-energy baseline")
    command("plot", "score curves with abnormal frames shaded, ROC curves and the most anomalous frames")
    render = command("render", "an annotated MP4 of one video: boxes coloured by score, the score curve below")
    render.add_argument("--video", required=True, help="the video's name, as in frame_scores.csv")
    render.add_argument("--output", help="the MP4 to write (default: RUN/render/VIDEO.mp4)")
    render.add_argument("--fps", type=float, default=25.0)
    boxes = command("boxes", "write the run's region boxes as a box file, to look at, edit or reuse with --boxes")
    boxes.add_argument("--output", help="the .npz to write (default: RUN/boxes_SPLIT.npz)")
    boxes.add_argument("--split", choices=("test", "training"), default="test",
                       help="the scored videos (test) or, in the semi-supervised mode, the training videos")
    report = command("report", "report.html: the run on one page (settings, metrics, ROC, every video's curve, "
                               "the alarms with thumbnails); vad run writes it too")
    report.add_argument("--render-top", type=int, default=0, metavar="N",
                        help="first render the videos of the N highest alarms (render/VIDEO.mp4), linked from the page")
    command("run", "all stages: extract, train, score, plot, eval, report", source=True)
    demo = command("demo", "generate a small surveillance-like dataset and run all stages on it")
    demo.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    demo.add_argument("--cache", default=None, help="cache root (default: RUN/cache)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Errors about the user's input end as one line on stderr and exit code 2 (``--debug``: the traceback)."""
    args = build_parser().parse_args(argv)
    return report_errors(f"vad {args.command}", args.debug, lambda: _dispatch(args))


def _join_ranks(args: argparse.Namespace) -> None:
    """Under torchrun, join the process group on the run's device (a sharded command), or refuse the command."""
    if distributed.shard_count() == 1:
        return
    if args.command not in SHARDED:
        raise ValueError(f"`vad {args.command}` runs in one process: start it without torchrun "
                         f"(under torchrun: {', '.join(SHARDED)})")
    device = _config(args).device if args.command in ("extract", "run") else run_folder.load_run(args.out)[0].device
    distributed.setup(resolve_device(device))


def _dispatch(args: argparse.Namespace) -> int:
    out = Path(args.out)
    progress = not args.quiet
    _join_ranks(args)
    code = _command(args, out, progress)
    distributed.shutdown()  # on an error, no barrier: the rank exits and torchrun stops the others
    return code


def _command(args: argparse.Namespace, out: Path, progress: bool) -> int:
    main = distributed.is_main()
    if args.command == "demo":
        from vad.synthetic import make_synthetic_ucsd

        t0 = time.perf_counter()
        run_folder.claim(out)  # before the data are generated in it: refuses a folder that holds no run
        data = out / "data"
        if not (data / "Test").is_dir():
            make_synthetic_ucsd(data)
        print(f"generated dataset: {data} ({time.perf_counter() - t0:.1f} s)")
        config = load_config(Path(__file__).resolve().parents[2] / "configs" / "demo.yaml", args.overrides)
        metrics = P.run(config, out, root=str(data), cache_root=args.cache or out / "cache", progress=progress)
        _print_metrics(out, metrics)
    elif args.command in ("extract", "run"):
        config = _config(args)
        if args.command == "run":
            metrics = P.run(config, out, root=args.root, videos_path=args.videos, cache_root=args.cache,
                            train_videos_path=args.train_videos, progress=progress)
            if main:
                _print_metrics(out, metrics)
        else:
            videos = P.open_run(out, config, root=args.root, videos_path=args.videos, cache_root=args.cache,
                                train_videos_path=args.train_videos)
            cache = P.extract_run(out, config, videos, args.cache, progress=progress)
            if main:
                print(f"cubes of {len(videos)} videos in {cache.folder}")
    elif args.command == "train":
        model = P.train_stage(out, progress)
        if main and model is None:
            print(f"attribute rarity of every cube (attributes.use=alone, no generator): {out / 'cube_errors.npz'}")
        elif main:
            print(f"trained; final loss {model.history_[-1]:.5f}; model: {out / 'model.pt'}; "
                  f"cube errors: {out / 'cube_errors.npz'}")
    elif args.command == "score":
        if args.overrides and main:
            P.change_score_settings(out, args.overrides)
        distributed.sync()
        if P.needs_refit(out):
            if main:
                print("score.perspective changes the attribute density's attributes: fitting it again")
            P.train_stage(out, progress)
        P.score_stage(out)
        if main:
            print(f"scores: {out / 'frame_scores.csv'}")
    elif args.command == "eval":
        _print_metrics(out, P.eval_stage(out))
    elif args.command == "plot":
        print(f"plots: {plot_run(out)}")
    elif args.command == "report":
        from pipelines.video.report import write_report

        if args.render_top < 0:
            raise ValueError(f"--render-top must be 0 or more, got {args.render_top}")
        print(f"report: {write_report(out, args.render_top, progress)}")
    elif args.command == "boxes":
        print(f"boxes: {P.export_boxes(out, args.output, args.split)}")
    elif args.command == "render":
        from pipelines.video.render import render_video

        print(f"video: {render_video(out, args.video, args.output, fps=args.fps, progress=progress)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
