"""Video datasets on disk -> ``Video`` objects with frame-level labels (1 = abnormal).

Only the test split is read: the method is transductive and scores the videos it learns from.

Layouts (``detect_layout`` picks one; ``open_dataset`` reads it):
- ``ucsd``: the official UCSD Ped1/Ped2 release, ``Test/Test001/001.tif ...``. Labels from ``Test/UCSDped*.m``
  (``TestVideoFile{end+1}.gt_frame = [5:90, 140:200];``, one line per video), else from the
  ``Test001_gt/*.bmp`` pixel masks. The .m file wins: Ped1 has masks for only 10 of its 36 videos.
- ``ucsd_preprocessed``: the ano_pred/MNAD layout, ``testing/frames/01/000.jpg ...`` with a ``*.mat`` in the
  root holding ``gt``, a 1xN cell of 2xK [start; end] ranges (1-based, inclusive, often stored as uint8).
- ``avenue``: ``testing_videos/08.avi ...`` or ``testing/frames/08/*.jpg``. Labels from the official pixel masks
  ``testing_label_mask/8_label.mat`` (``volLabel``, one HxW mask per frame) when every present video has one,
  else from a concatenated frame-label ``*.npy`` over all test videos, split by the video lengths.
- ``videos``: unlabeled, see ``open_videos``.

Every labelled video has exactly one label per frame; ``Video.label_source`` says where the labels came from.
"""
from __future__ import annotations

import hashlib
import itertools
import logging
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import h5py
import numpy as np
import scipy.io

from image_od.data.user_images import IMAGE_EXT, ImageReadError, read_image_file

log = logging.getLogger(__name__)

VIDEO_EXT = frozenset({".avi", ".mp4", ".mov", ".mkv", ".mpg", ".mpeg", ".m4v", ".webm", ".wmv"})
LAYOUTS = ("ucsd", "ucsd_preprocessed", "avenue", "videos")
AVENUE_LABELS = ("auto", "masks", "npy")
BAD_FRAMES = ("error", "skip")  # what an unreadable or truncated frame image does: stop, or repeat the previous frame


class DatasetError(ValueError):
    """Bad or missing input; the message names the file or folder and what is wrong."""


# ---------------------------------------------------------------- files and frames

def _natural_key(p: Path) -> list:
    """Sort key so that '2.png' < '10.png'."""
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", p.name)]


def _visible(folder: Path) -> list[Path]:
    """Entries of a folder in natural order, hidden ones (``.DS_Store``, macOS ``._001.tif``) left out."""
    return sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=_natural_key)


def image_files(folder: Path) -> list[Path]:
    """The frame images of a folder in natural order."""
    return [p for p in _visible(folder) if p.is_file() and p.suffix.lower() in IMAGE_EXT]


def _frame_numbers(files: list[Path]) -> list[int] | None:
    """The numbers of frame files named ``<prefix><digits>.<ext>`` with one common prefix, else None."""
    matches = [re.fullmatch(r"(.*?)(\d+)", p.stem) for p in files]
    if not matches or None in matches or len({m.group(1).lower() for m in matches}) != 1:
        return None
    return [int(m.group(2)) for m in matches]


def check_frame_numbers(folder: Path, files: list[Path]) -> None:
    """Numbered frame files must be contiguous and unique: a missing frame would shift every later label."""
    numbers = _frame_numbers(files)
    if numbers is None:
        return
    counts: dict[int, int] = {}
    for n in numbers:
        counts[n] = counts.get(n, 0) + 1
    twice = sorted(n for n, c in counts.items() if c > 1)
    if twice:
        same = [p.name for p, n in zip(files, numbers) if n == twice[0]]
        raise DatasetError(f"frame folder {folder}: frame number {twice[0]} appears more than once ({same})")
    lo, hi = min(numbers), max(numbers)
    missing = sorted(set(range(lo, hi + 1)) - set(numbers))
    if missing:
        width = len(re.fullmatch(r".*?(\d+)", files[0].stem).group(1))
        names = [f"{m:0{width}d}" for m in missing[:5]] + (["..."] if len(missing) > 5 else [])
        raise DatasetError(f"frame folder {folder}: {len(missing)} frame file(s) missing in the numbering "
                           f"{files[0].name}..{files[-1].name}: {', '.join(names)}; every later frame would take "
                           "the wrong label (restore the file, or renumber the frames)")


def frame_files(folder: Path) -> list[Path]:
    """The frame images of a video folder in order, after checking that their numbering has no gap."""
    files = image_files(folder)
    check_frame_numbers(folder, files)
    return files


def _video_files(folder: Path) -> list[Path]:
    return [p for p in _visible(folder) if p.is_file() and p.suffix.lower() in VIDEO_EXT]


def _frame_folders(folder: Path) -> list[Path]:
    return [p for p in _visible(folder) if p.is_dir() and image_files(p)]


def _read_image(path: Path, grey: bool) -> np.ndarray:
    """One frame or mask image; unreadable and truncated files raise a DatasetError naming the file."""
    try:
        return read_image_file(path, cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR)
    except ImageReadError as err:
        raise DatasetError(f"unreadable frame image: {err}") from None


def _sha256(files: list[Path], names: bool = False) -> str:
    """SHA-256 over the files' bytes in order (each preceded by its name when ``names``), read 1 MiB at a time."""
    digest = hashlib.sha256()
    for path in files:
        if names:
            digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def iter_frame_files(files: list[Path], grey: bool, bad_frames: str = "error", video: str = "") -> Iterator[np.ndarray]:
    """Decode frame files one by one. ``bad_frames="error"`` stops at the first unreadable or truncated one;
    ``"skip"`` replaces each by the previous good frame (the first good one at the start), so labels stay aligned,
    and prints the files it replaced once the last file is read."""
    if bad_frames not in BAD_FRAMES:
        raise DatasetError(f"unknown data.bad_frames {bad_frames!r}; expected one of {BAD_FRAMES}")
    bad: list[str] = []
    last: np.ndarray | None = None
    for p in files:
        try:
            frame = _read_image(p, grey)
        except DatasetError as err:
            if bad_frames == "error":
                raise DatasetError(f"{err} (set data.bad_frames=skip to repeat the previous frame instead)") from None
            bad.append(str(err))
            if last is not None:
                yield last
            continue
        if last is None:  # the leading bad frames repeat the first good one
            yield from [frame] * len(bad)
        yield (last := frame)
    if last is None:
        raise DatasetError(f"video {video}: none of its {len(files)} frame images is readable")
    if bad:
        print(f"warning: video {video}: {len(bad)} unreadable, truncated or corrupt frame(s) replaced by the "
              f"previous good frame (data.bad_frames=skip): {'; '.join(bad)}", file=sys.stderr, flush=True)


def read_frame_files(files: list[Path], grey: bool, bad_frames: str = "error", video: str = "") -> list[np.ndarray]:
    """All frames of ``iter_frame_files`` in a list."""
    return list(iter_frame_files(files, grey, bad_frames, video))


def _iter_opencv(path: Path, grey: bool) -> Iterator[np.ndarray]:
    """The frames OpenCV can decode, one by one (none when it cannot open the file)."""
    cap = cv2.VideoCapture(str(path))
    try:
        while cap.isOpened():
            ok, frame = cap.read()
            if not ok:
                break
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if grey else frame
    finally:
        cap.release()


def _count_opencv(path: Path) -> int:
    """Frames OpenCV can demux and decode (0 when it cannot open the file); exact, unlike CAP_PROP_FRAME_COUNT."""
    cap = cv2.VideoCapture(str(path))
    n = 0
    try:
        while cap.isOpened() and cap.grab():
            n += 1
    finally:
        cap.release()
    return n


def _ffmpeg_error(path: Path, err: Exception) -> DatasetError:
    import ffmpeg

    if isinstance(err, ffmpeg.Error):
        tail = err.stderr.decode(errors="replace").strip().splitlines()[-1:] if err.stderr else []
        return DatasetError(f"cannot decode video {path} with OpenCV nor ffmpeg: {' '.join(tail)}")
    if isinstance(err, (StopIteration, KeyError)):
        return DatasetError(f"cannot decode video {path}: ffmpeg finds no video stream")
    return DatasetError(f"cannot decode video {path} with OpenCV, and ffmpeg is unavailable: {err}")


def _iter_ffmpeg(path: Path, grey: bool) -> Iterator[np.ndarray]:
    """Decode with the ffmpeg binary through ffmpeg-python, frame by frame from a pipe: the fallback for codecs
    OpenCV's build lacks."""
    import ffmpeg

    try:
        stream = next(s for s in ffmpeg.probe(str(path))["streams"] if s.get("codec_type") == "video")
        w, h = int(stream["width"]), int(stream["height"])
        proc = (ffmpeg.input(str(path)).output("pipe:", format="rawvideo", pix_fmt="gray" if grey else "bgr24")
                .global_args("-nostats", "-loglevel", "error")  # a quiet stderr cannot fill its pipe
                .run_async(pipe_stdout=True, pipe_stderr=True))
    except (ffmpeg.Error, StopIteration, KeyError, OSError) as err:
        raise _ffmpeg_error(path, err) from None
    shape, frame_bytes, n = ((h, w) if grey else (h, w, 3)), h * w * (1 if grey else 3), 0
    try:
        while len(raw := proc.stdout.read(frame_bytes)) == frame_bytes:
            n += 1
            yield np.frombuffer(raw, np.uint8).reshape(shape)
    finally:
        proc.stdout.close()
        stderr = proc.stderr.read()
        proc.stderr.close()
        code = proc.wait()
    if code != 0 or raw or not n:
        tail = stderr.decode(errors="replace").strip().splitlines()[-1:]
        raise DatasetError(f"cannot decode video {path} with OpenCV nor ffmpeg ({n} frames of {w}x{h}, then "
                           f"{len(raw)} stray bytes, exit code {code}): {' '.join(tail)}")


@dataclass(frozen=True, eq=False)
class Video:
    """One video: a folder of frame images or a video file, with optional per-frame labels (1 = abnormal).

    ``eq=False``: videos compare by identity (labels are arrays). ``_count`` and ``_shape`` cache ``frame_count`` and
    ``frame_shape``.
    """

    name: str
    path: Path
    labels: np.ndarray | None = field(default=None, repr=False)
    label_source: str | None = None
    _count: list[int] = field(default_factory=list, repr=False)
    _shape: list[tuple[int, int]] = field(default_factory=list, repr=False)

    def frame_count(self) -> int:
        """Number of frame images, or of frames of a video file (counted once with OpenCV's grab, which demuxes
        without converting; ffmpeg decodes when OpenCV cannot open it), then cached."""
        if not self._count:
            if self.path.is_dir():
                n = len(frame_files(self.path))
            else:
                n = _count_opencv(self.path) or sum(1 for _ in _iter_ffmpeg(self.path, grey=True))
            self._count.append(n)
        return self._count[0]

    def frame_shape(self) -> tuple[int, int]:
        """(height, width) of the frames, from the first frame (read once, then cached)."""
        if not self._shape:
            self._shape.append(self._first_frame_shape())
        return self._shape[0]

    def _first_frame_shape(self) -> tuple[int, int]:
        if self.path.is_dir():
            files = frame_files(self.path)
            if not files:
                raise DatasetError(f"no frames in {self.path}")
            return tuple(_read_image(files[0], True).shape[:2])
        cap = cv2.VideoCapture(str(self.path))
        try:
            ok, frame = cap.read()
        finally:
            cap.release()
        return tuple(frame.shape[:2]) if ok else tuple(next(_iter_ffmpeg(self.path, grey=True)).shape[:2])

    def source_fingerprint(self, n_frames: int | None = None, content: bool = False) -> dict[str, int | str]:
        """What identifies the video's content. Fast (the default): file size, modification time and frame count
        (for a frame folder: number of files, newest modification time and total size); it misses a change that
        keeps sizes and restores modification times (two frames swapped, say). ``content``: sizes, counts and the
        SHA-256 of the bytes (frame files in order, with their names) instead of times, so that a copy on another
        machine is reused and any change is caught. ``n_frames``, when known, spares decoding a video file to count
        its frames."""
        if self.path.is_dir():
            files = frame_files(self.path)
            stats = [p.stat() for p in files]
            sizes = {"files": len(stats), "total_size": sum(s.st_size for s in stats)}
            if content:
                return {**sizes, "sha256": _sha256(files, names=True)}
            return {**sizes, "newest_mtime_ns": max((s.st_mtime_ns for s in stats), default=0)}
        st = self.path.stat()
        frames = self.frame_count() if n_frames is None else n_frames
        if content:
            return {"size": st.st_size, "frames": frames, "sha256": _sha256([self.path])}
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "frames": frames}

    def iter_frames(self, grey: bool = True, bad_frames: str = "error") -> Iterator[np.ndarray]:
        """The frames one by one, uint8 (H,W) when grey, else (H,W,3) BGR: frame files in order (``bad_frames``:
        see ``iter_frame_files``), or a video file through OpenCV, through ffmpeg when OpenCV decodes nothing.
        Raises a DatasetError when there are no frames or their sizes differ."""
        if self.path.is_dir():
            frames = iter_frame_files(frame_files(self.path), grey, bad_frames, self.name)
        else:
            frames = _iter_opencv(self.path, grey)
            first = next(frames, None)
            frames = _iter_ffmpeg(self.path, grey) if first is None else itertools.chain([first], frames)
        size = None
        for frame in frames:
            if size is None:
                size = frame.shape[:2]
            elif frame.shape[:2] != size:
                raise DatasetError(f"frames of {self.path} differ in size (HxW): {sorted({size, frame.shape[:2]})}")
            yield frame
        if size is None:
            raise DatasetError(f"no frames in {self.path}")

    def read_frames(self, grey: bool = True, bad_frames: str = "error") -> np.ndarray:
        """All frames of ``iter_frames`` stacked: uint8 (T,H,W) when grey, else (T,H,W,3) BGR."""
        return np.stack(list(self.iter_frames(grey, bad_frames)))


def _labelled(video: Video, labels: np.ndarray, source: str) -> Video:
    """``video`` with its labels, after checking there is one label per frame."""
    n = video.frame_count()
    if n == 0:
        raise DatasetError(f"video {video.name} ({video.path}) has no frames")
    if len(labels) != n:
        raise DatasetError(f"video {video.name} ({video.path}): {len(labels)} labels ({source}) but {n} frames "
                           "(a frame file missing or extra at the end?)")
    return replace(video, labels=(np.asarray(labels) != 0).astype(np.uint8), label_source=source)


def ranges_to_labels(ranges: list[tuple[int, int]], n: int, where: str) -> np.ndarray:
    """1-based inclusive [start, end] ranges -> 0/1 per frame; every range must lie within frames 1..n."""
    labels = np.zeros(n, np.uint8)
    for a, b in ranges:
        if not 1 <= a <= b <= n:
            raise DatasetError(f"{where}: range {a}:{b} is not within the video's frames 1..{n}")
        labels[a - 1:b] = 1
    return labels


# ---------------------------------------------------------------- MATLAB files

def _h5_value(f: h5py.File, obj: h5py.Dataset) -> np.ndarray:
    """A v7.3 (HDF5) variable as scipy.io.loadmat would give it: cells as object arrays, MATLAB axis order."""
    data = obj[()]
    if obj.dtype == h5py.ref_dtype:
        out = np.empty(data.shape[::-1], dtype=object)
        for idx, ref in np.ndenumerate(data.T):
            out[idx] = _h5_value(f, f[ref])
        return out
    return np.asarray(data).T


def _read_mat_var(path: Path, name: str) -> np.ndarray | None:
    if h5py.is_hdf5(str(path)):
        with h5py.File(path, "r") as f:
            return _h5_value(f, f[name]) if name in f else None
    return scipy.io.loadmat(str(path), variable_names=[name]).get(name)


def load_mat_var(path: Path, name: str) -> np.ndarray:
    """Variable ``name`` of a MATLAB file (v5 through scipy, v7.3 through h5py)."""
    try:
        value = _read_mat_var(path, name)
    except (NotImplementedError, ValueError, TypeError, OSError) as err:
        raise DatasetError(f"cannot read MATLAB file {path} (v5 or v7.3 expected): {err}") from None
    if value is None:
        raise DatasetError(f"{path}: no variable {name!r}")
    return value


def _mat_var_shape(path: Path, name: str) -> tuple[int, ...] | None:
    """Shape of a MATLAB variable without loading it (None when absent or unreadable)."""
    try:
        if h5py.is_hdf5(str(path)):
            with h5py.File(path, "r") as f:
                return tuple(f[name].shape[::-1]) if name in f else None
        return next((tuple(shape) for var, shape, _ in scipy.io.whosmat(str(path)) if var == name), None)
    except (NotImplementedError, ValueError, TypeError, OSError):
        return None


# ---------------------------------------------------------------- UCSD, official release

def parse_ucsd_m(path: Path) -> list[list[tuple[int, int]]]:
    """The frame ranges of each ``TestVideoFile{end+1}.gt_frame = [61:180, 7];`` line, in file order."""
    videos = []
    for line in path.read_text(errors="replace").splitlines():
        code = line.split("%", 1)[0]
        m = re.search(r"gt_frame\s*=\s*\[([^\]]*)\]", code)
        if not m:
            continue
        ranges = []
        for part in re.split(r"[,\s]+", re.sub(r"\s*:\s*", ":", m.group(1)).strip()):
            if not part:
                continue
            bounds = re.fullmatch(r"(\d+)(?::(\d+))?", part)
            if not bounds:
                raise DatasetError(f"{path}: cannot read frame range {part!r} in line {line.strip()!r}")
            a = int(bounds.group(1))
            ranges.append((a, int(bounds.group(2) or a)))
        videos.append(ranges)
    return videos


def _ucsd_test_folder(root: Path) -> Path | None:
    """The folder holding TestNNN/ (``root/Test`` or root itself), if any."""
    for test in (root / "Test", root):
        if test.is_dir() and any(re.fullmatch(r"Test\d+", p.name) and p.is_dir() for p in _visible(test)):
            return test
    return None


def _ucsd_m_file(test: Path) -> Path | None:
    """The label .m file of a Test folder: the single ``UCSDped*.m``, else the single ``*.m``."""
    m_files = [p for p in _visible(test) if p.suffix == ".m" and p.is_file()]
    preferred = [p for p in m_files if p.name.lower().startswith("ucsdped")] or m_files
    if len(preferred) > 1:
        raise DatasetError(f"several label .m files in {test}, cannot tell which: {[p.name for p in preferred]}")
    return preferred[0] if preferred else None


def _mask_labels(folder: Path) -> np.ndarray:
    """Frame labels from a folder of pixel masks: 1 where any pixel is non-zero."""
    return np.array([int(_read_image(p, True).any()) for p in frame_files(folder)], np.uint8)


def open_ucsd(root: Path) -> list[Video]:
    """Official UCSD release: TestNNN frame folders, labels from the .m file, else from TestNNN_gt masks."""
    test = _ucsd_test_folder(root)
    if test is None:
        raise DatasetError(f"no UCSD test videos: expected folders {root}/Test/Test001/ (frame images)")
    videos = [Video(d.name, d) for d in _visible(test) if d.is_dir() and re.fullmatch(r"Test\d+", d.name)]
    m_file = _ucsd_m_file(test)
    if m_file is not None:
        entries = parse_ucsd_m(m_file)
        if len(entries) != len(videos):
            raise DatasetError(f"{m_file}: {len(entries)} gt_frame lines for {len(videos)} test videos in {test}")
        source = f"ucsd_m:{m_file}"
        return [_labelled(v, ranges_to_labels(r, v.frame_count(), f"{m_file} ({v.name})"), source)
                for v, r in zip(videos, entries)]
    labelled = []
    for v in videos:
        gt = test / f"{v.name}_gt"
        if not gt.is_dir():
            raise DatasetError(f"no labels for video {v.name}: no .m file in {test} and no mask folder {gt}")
        labelled.append(_labelled(v, _mask_labels(gt), f"ucsd_gt_masks:{gt}"))
    return labelled


# ---------------------------------------------------------------- UCSD, preprocessed (ano_pred / MNAD)

def _gt_mat(root: Path) -> Path | None:
    """The single ``*.mat`` of ``root`` holding the variable ``gt``."""
    mats = [p for p in sorted(root.glob("*.mat")) if _mat_var_shape(p, "gt") is not None]
    if len(mats) > 1:
        raise DatasetError(f"several .mat files with 'gt' in {root}, cannot tell which: {[p.name for p in mats]}")
    return mats[0] if mats else None


def _gt_ranges(cell: np.ndarray) -> list[tuple[int, int]]:
    """One ``gt`` entry (2xK [start; end], often uint8) as int ranges; cast first so arithmetic cannot wrap."""
    arr = np.asarray(cell).astype(np.int64)
    return [(int(a), int(b)) for a, b in arr.reshape(2, -1).T]


def open_ucsd_preprocessed(root: Path) -> list[Video]:
    """``testing/frames/NN/`` folders labelled by the ranges of the ``gt`` variable of a .mat in ``root``."""
    frames_root = root / "testing" / "frames"
    if not frames_root.is_dir():
        raise DatasetError(f"no test videos: expected frame folders in {frames_root}")
    videos = [Video(d.name, d) for d in _frame_folders(frames_root)]
    if not videos:
        raise DatasetError(f"no frame folders with images in {frames_root}")
    mat = _gt_mat(root)
    if mat is None:
        raise DatasetError(f"no labels: expected a .mat file with variable 'gt' (frame ranges) in {root}")
    gt = load_mat_var(mat, "gt").ravel()
    if len(gt) != len(videos):
        raise DatasetError(f"{mat}: 'gt' has {len(gt)} entries for {len(videos)} videos in {frames_root}")
    source = f"mat_gt:{mat}"
    return [_labelled(v, ranges_to_labels(_gt_ranges(c), v.frame_count(), f"{mat} ({v.name})"), source)
            for v, c in zip(videos, gt)]


# ---------------------------------------------------------------- CUHK Avenue

def _avenue_videos(root: Path) -> list[Video]:
    if (root / "testing_videos").is_dir():
        videos = [Video(p.stem, p) for p in _video_files(root / "testing_videos")]
    elif (root / "testing" / "frames").is_dir():
        videos = [Video(d.name, d) for d in _frame_folders(root / "testing" / "frames")]
    else:
        raise DatasetError(f"no Avenue test videos: expected {root}/testing_videos/*.avi or {root}/testing/frames/NN/")
    if not videos:
        raise DatasetError(f"no Avenue test videos found under {root}")
    for v in videos:
        if not v.name.isdigit():
            raise DatasetError(f"Avenue video {v.path} is not named by its number (e.g. 08)")
    return videos


def avenue_mask_file(video_path: str | Path) -> Path | None:
    """The official pixel-mask file of an Avenue test video (``<root>/testing_videos/08.avi`` ->
    ``<root>/testing_label_mask/8_label.mat``), or None when there is none."""
    path = Path(video_path)
    if not path.stem.isdigit():
        return None
    mask = path.parent.parent / "testing_label_mask" / f"{int(path.stem)}_label.mat"
    return mask if mask.is_file() else None


def pixel_mask_source(video_path: str | Path) -> Path | None:
    """Where a test video's per-frame pixel masks are: Avenue's official mask file, or a UCSD video's ``TestNNN_gt``
    folder of mask images beside its ``TestNNN`` frame folder (Ped1's release has them for 10 of its 36 videos,
    Ped2's for all 12); None when it has none."""
    avenue = avenue_mask_file(video_path)
    if avenue is not None:
        return avenue
    path = Path(video_path)
    gt = path.with_name(f"{path.name}_gt")
    return gt if path.is_dir() and gt.is_dir() else None


def pixel_masks(video_path: str | Path) -> list[np.ndarray] | None:
    """The video's per-frame anomaly masks (HxW, nonzero = abnormal) from ``pixel_mask_source``, or None."""
    source = pixel_mask_source(video_path)
    if source is None:
        return None
    if source.is_dir():
        return [_read_image(p, True) for p in frame_files(source)]
    return [np.asarray(m) for m in load_mat_var(source, "volLabel").ravel()]


def _avenue_masks(root: Path, videos: list[Video]) -> list[Video]:
    """Labels from ``testing_label_mask/N_label.mat``: a frame is abnormal if any mask pixel is set."""
    labelled = []
    for v in videos:
        path = root / "testing_label_mask" / f"{int(v.name)}_label.mat"
        vol = load_mat_var(path, "volLabel").ravel()
        labels = np.array([int(np.asarray(m).any()) for m in vol], np.uint8)
        labelled.append(_labelled(v, labels, f"avenue_masks:{path}"))
    return labelled


def _avenue_lengths(root: Path, videos: list[Video]) -> list[int] | None:
    """The lengths of all test videos 1..N in order: from complete masks, else from the videos if all are present."""
    mask_dir = root / "testing_label_mask"
    n_masks = len(list(mask_dir.glob("*_label.mat"))) if mask_dir.is_dir() else 0
    shapes = [_mat_var_shape(mask_dir / f"{i}_label.mat", "volLabel") for i in range(1, n_masks + 1)]
    if shapes and None not in shapes and max(int(v.name) for v in videos) <= len(shapes):
        return [int(np.prod(s)) for s in shapes]
    if [int(v.name) for v in videos] == list(range(1, len(videos) + 1)):
        return [v.frame_count() for v in videos]
    return None


def _avenue_npy(root: Path, videos: list[Video], npy: Path) -> list[Video]:
    """Labels from a ``.npy`` concatenated over all test videos, split by the video lengths."""
    labels = np.load(npy).ravel()
    lengths = _avenue_lengths(root, videos)
    if lengths is None:
        raise DatasetError(
            f"{npy}: cannot split its {len(labels)} concatenated labels by video: only videos "
            f"{','.join(v.name for v in videos)} are present and no complete {root / 'testing_label_mask'} "
            "gives the lengths of the missing ones")
    if sum(lengths) != len(labels):
        raise DatasetError(f"{npy}: {len(labels)} concatenated labels but the {len(lengths)} test videos "
                           f"have {sum(lengths)} frames in all")
    starts = np.concatenate([[0], np.cumsum(lengths)])
    return [_labelled(v, labels[starts[int(v.name) - 1]:starts[int(v.name)]], f"avenue_npy:{npy}") for v in videos]


def open_avenue(root: Path, labels: str = "auto") -> list[Video]:
    """Avenue test videos with labels from the pixel masks or the concatenated ``.npy``.

    ``labels``: "masks", "npy", or "auto" (the masks when every present video has one, else the .npy).
    """
    if labels not in AVENUE_LABELS:
        raise DatasetError(f"unknown Avenue label source {labels!r}; expected one of {AVENUE_LABELS}")
    videos = _avenue_videos(root)
    missing = [p for p in (root / "testing_label_mask" / f"{int(v.name)}_label.mat" for v in videos)
               if not p.is_file()]
    npys = sorted(root.glob("*.npy"))
    if labels == "masks" or (labels == "auto" and not missing):
        if missing:
            raise DatasetError(f"missing Avenue label masks: {[str(p) for p in missing]}")
        return _avenue_masks(root, videos)
    if len(npys) != 1:
        found = f"several: {[p.name for p in npys]}" if npys else "none"
        raise DatasetError(f"no Avenue labels: expected {root}/testing_label_mask/N_label.mat for every video "
                           f"or one frame-label .npy in {root} (found {found})")
    return _avenue_npy(root, videos, npys[0])


# ---------------------------------------------------------------- entry points

def detect_layout(root: Path) -> str:
    """Which of ``LAYOUTS`` a dataset root is in, from its folder structure."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"dataset path not found: {root}")
    if root.is_file():
        return "videos"
    if _ucsd_test_folder(root) is not None:
        return "ucsd"
    if (root / "testing_videos").is_dir() or (root / "testing_label_mask").is_dir():
        return "avenue"
    if (root / "testing" / "frames").is_dir():
        if _gt_mat(root) is not None:
            return "ucsd_preprocessed"
        if any(root.glob("*.npy")):
            return "avenue"
        raise DatasetError(f"{root}/testing/frames has no labels: expected a .mat with 'gt' or a frame-label .npy "
                           f"in {root} (use open_videos for unlabeled frames)")
    return "videos"


def open_dataset(root: str | Path, layout: str = "auto", *, avenue_labels: str = "auto") -> list[Video]:
    """The labelled test videos of a dataset (``videos`` layout: unlabeled), layout auto-detected by default.

    ``avenue_labels`` picks the Avenue label source: "auto" (masks if complete, else .npy), "masks" or "npy".
    """
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"dataset path not found: {root}")
    if layout == "auto":
        layout = detect_layout(root)
    openers: dict[str, Callable[[Path], list[Video]]] = {
        "ucsd": open_ucsd,
        "ucsd_preprocessed": open_ucsd_preprocessed,
        "avenue": lambda r: open_avenue(r, avenue_labels),
        "videos": open_videos,
    }
    if layout not in openers:
        raise DatasetError(f"unknown layout {layout!r}; expected 'auto' or one of {LAYOUTS}")
    videos = openers[layout](root)
    sources = sorted({v.label_source.split(":", 1)[0] for v in videos if v.label_source})
    log.info("%s: %d videos, layout %s, labels from %s", root, len(videos), layout, ", ".join(sources) or "none")
    return videos


def path_list(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    """One path or several, as a list of paths."""
    return [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]


def open_videos(paths: str | Path | Sequence[str | Path]) -> list[Video]:
    """Unlabeled videos from one path or several, each a video file, a folder of frames, or a folder of video files
    and/or frame folders. A video's name (its file's stem or its folder's name) names its rows in the outputs and
    its cache entry, so two videos with the same name are refused, with both paths named."""
    videos = [v for path in path_list(paths) for v in _videos_at(path)]
    seen: dict[str, Video] = {}
    for v in videos:
        if v.name in seen:
            raise DatasetError(f"two videos would both be called {v.name!r} (the name of their rows in the outputs and "
                               f"of their cache entries): {seen[v.name].path} and {v.path}; rename one, or score them "
                               "in separate runs")
        seen[v.name] = v
    return videos


def _videos_at(path: Path) -> list[Video]:
    """``open_videos`` of one path."""
    if not path.exists():
        raise DatasetError(f"video path not found: {path}")
    if path.is_file():
        if path.suffix.lower() not in VIDEO_EXT:
            raise DatasetError(f"{path} is not a video file (expected one of {sorted(VIDEO_EXT)})")
        return [Video(path.stem, path)]
    if image_files(path):
        return [Video(path.name, path)]
    videos = [Video(p.stem, p) for p in _video_files(path)] + [Video(d.name, d) for d in _frame_folders(path)]
    used = {v.path for v in videos}
    for entry in _visible(path):  # say aloud what is not read: broken or looping links, other files
        if entry not in used:
            why = ("a broken or looping link" if entry.is_symlink() and not entry.exists() else
                   "not a video file or a folder of frames")
            print(f"warning: skipped {entry}: {why}", file=sys.stderr)
    if not videos:
        raise DatasetError(f"no videos in {path}: expected video files ({', '.join(sorted(VIDEO_EXT))}), "
                           "frame images, or folders of frame images")
    return videos


def open_training_split(root: str | Path, layout: str = "auto") -> list[Video]:
    """The normal training videos of a dataset (unlabeled: every frame is normal by the dataset's definition), for
    the semi-supervised mode: UCSD ``Train/TrainNNN/``, preprocessed ``training/frames/NN/``, Avenue
    ``training_videos/*.avi`` or ``training/frames/NN/``."""
    root = Path(root)
    if layout == "auto":
        layout = detect_layout(root)
    candidates = {
        "ucsd": [(root / "Train", "ucsd"), (root, "ucsd")],
        "ucsd_preprocessed": [(root / "training" / "frames", "folders")],
        "avenue": [(root / "training_videos", "files"), (root / "training" / "frames", "folders")],
    }.get(layout)
    if candidates is None:
        raise DatasetError(f"layout {layout!r} of {root} has no training split (semi-supervised mode needs a "
                           "UCSD or Avenue dataset root)")
    for folder, kind in candidates:
        if not folder.is_dir():
            continue
        if kind == "ucsd":
            videos = [Video(d.name, d) for d in _visible(folder) if d.is_dir() and re.fullmatch(r"Train\d+", d.name)]
        elif kind == "folders":
            videos = [Video(d.name, d) for d in _frame_folders(folder)]
        else:
            videos = [Video(p.stem, p) for p in _video_files(folder)]
        if videos:
            return videos
    raise DatasetError(f"no training videos under {root}: expected "
                       + " or ".join(str(f) for f, _ in candidates))
