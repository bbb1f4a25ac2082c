"""`calm index`: encode a folder of videos once into a search index, then keep it up to date.

A rerun compares every file's (path, size, mtime) with the index: unchanged files keep their
rows, new or changed files are decoded and encoded, removed files are dropped. Files that failed
before and have not changed are not retried but stay listed in the report. An index belongs to
the checkpoint that built it (its sha256): scores from two models are not comparable, so an
index refuses to be extended with another one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from calm.api import CalmModel, EncodedVideos
from calm.data.files import scan_videos
from calm.search import sharded, store
from calm.search.scoring import AGREEMENT, video_agreement
from calm.search.shortlist import IVF_ABOVE, build_ivf, have_faiss, write_ivf
from calm.search.store import Manifest, RowWriter, SearchIndexError, VideoEntry

TOP_ANCHORS = 5
THUMBNAIL_SIZE = 192
KEEP_CHUNK = 4096  # rows copied at a time from the previous generation


def model_record(model: CalmModel) -> dict:
    st = model.checkpoint.stat()
    return {
        "sha256": model.fingerprint,
        "path": str(model.checkpoint.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "fusion": model.fusion_name,
        "num_frames": model.frame_spec.num_frames,
        "anchor_labels": model.anchor_labels,
        "vae": model.has_vae,
    }


def check_same_model(manifest: Manifest, model: CalmModel, index_dir: Path) -> None:
    """Refuses a model other than the index's; the very file it recorded is not hashed again."""
    built = manifest.checkpoint.get("sha256")
    record = manifest.checkpoint
    st = model.checkpoint.stat()
    if (str(model.checkpoint.resolve()) == record.get("path")
            and (st.st_size, st.st_mtime_ns) == (record.get("size"), record.get("mtime_ns"))):
        return
    if built != model.fingerprint:
        raise SearchIndexError(
            f"{index_dir} was built with checkpoint {manifest.checkpoint.get('path')} "
            f"(sha256 {str(built)[:12]}); {model.checkpoint} (sha256 {model.fingerprint[:12]}) is "
            "another model, whose scores are not comparable: index with it into a new --out folder"
        )


@dataclass
class FileStat:
    rel: str
    path: Path
    size: int
    mtime_ns: int


def stat_files(root: Path) -> tuple[list[FileStat], list[dict]]:
    """The folder's video files, and the links left out of them ({"path", "reason"})."""
    scan = scan_videos(root)
    out = []
    for path in scan.videos:
        st = path.stat()
        out.append(FileStat(path.relative_to(root).as_posix(), path, st.st_size, st.st_mtime_ns))
    left_out = [{"path": path.relative_to(root).as_posix(), "reason": reason}
                for path, reason in scan.left_out]
    return out, left_out


class _Rows:
    """The writers of one new generation, created from the first block's shapes."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.writers: dict[str, RowWriter] = {}

    def append(self, arrays: dict[str, np.ndarray]) -> None:
        for name, block in arrays.items():
            if name not in self.writers:
                self.writers[name] = RowWriter(self.folder / f"{name}.npy", block.dtype, block.shape[1:])
            self.writers[name].append(block)

    def finish(self) -> None:
        for writer in self.writers.values():
            writer.finish()


def index_rows(model: CalmModel, enc: EncodedVideos) -> dict[str, np.ndarray]:
    """What search needs per video as numpy rows. What scores is float32 (the head's state, the
    anchor agreement): fp16 states move scores by ~1e-3, enough to swap neighbours in a ranking."""
    rows = {
        f"state.{k}": v.numpy() if v.dtype == torch.bool else v.float().numpy()
        for k, v in enc.state.items()
    }
    rows["mean"] = enc.mean.float().numpy()
    rows["mask"] = enc.mask.numpy()
    rows["times"] = enc.times.numpy().astype(np.float32)
    rows["durations"] = enc.durations.numpy().astype(np.float32)
    if not model.model.fusion.text_conditioned:
        rows["frames"] = torch.nn.functional.normalize(enc.frames, dim=-1).half().numpy()
    if model.anchor_labels is not None:
        probs = model.anchor_probs(enc)
        top = probs.topk(min(TOP_ANCHORS, probs.shape[1]), dim=1)
        rows["anchor_ids"] = top.indices.numpy().astype(np.int32)
        rows["anchor_probs"] = top.values.numpy().astype(np.float32)
    if model.cfg.model.score.mode == "anchor_agreement" and model.has_vae:
        rows[AGREEMENT] = video_agreement(model, enc.frames.to(model.device),
                                          enc.mask.to(model.device))
    return rows


def _plan(model: CalmModel, videos: Path, out: Path):
    """The previous index (checked), the folder's files and the links left out of them, and
    what a rerun keeps and encodes."""
    root, out = Path(videos).resolve(), Path(out)
    old = store.read_manifest(out)
    if old is not None:
        check_same_model(old, model, out)
        if Path(old.root) != root:
            raise SearchIndexError(
                f"{out} indexes {old.root}, not {root}: one index holds one folder; "
                "use another --out for another folder"
            )
    elif out.exists() and any(out.iterdir()):
        raise SearchIndexError(f"{out} exists and is not a calm search index; choose an empty folder")
    files, left_out = stat_files(root)
    return root, out, old, files, left_out, *_changes(old, files)


def _changes(old: Manifest | None, files: list[FileStat]):
    """(rows kept as they are, failures kept as they are, files to encode) of a rerun."""
    old_rows = {v.path: (i, v) for i, v in enumerate(old.videos)} if old else {}
    old_failed = {f["path"]: f for f in old.failures} if old else {}
    keep, failures, todo = [], [], []
    for f in files:
        row = old_rows.get(f.rel)
        failed = old_failed.get(f.rel)
        if row is not None and row[1].key == (f.size, f.mtime_ns):
            keep.append(row)
        elif failed is not None and (failed["size"], failed["mtime_ns"]) == (f.size, f.mtime_ns):
            failures.append(failed)
        else:
            todo.append(f)
    return keep, failures, todo


def encoded_batches(model: CalmModel, paths: list[str], workers: int, progress: bool,
                    batch_size: int):
    """(index rows or None, decoded paths, thumbnails, failures) per batch of `paths`."""
    for enc in model.iter_encode_videos(paths, workers, progress, batch_size,
                                        thumbnail_size=THUMBNAIL_SIZE):
        yield (index_rows(model, enc) if len(enc) else None, enc.paths, enc.thumbnails,
               enc.failed)


def write_shortlist(folder: Path, n: int, ivf_above: int = IVF_ABOVE) -> str | None:
    """Builds the IVF shortlist of a generation with at least `ivf_above` videos; returns a note
    when one would be needed but faiss is missing."""
    if n < ivf_above:
        return None
    if not have_faiss():
        return (f"{n} videos: install faiss-cpu for the IVF shortlist (search scans every "
                "frame-mean vector until then)")
    write_ivf(build_ivf(np.load(folder / "mean.npy", mmap_mode="r")), folder / store.IVF)
    return None


def build_index(
    model: CalmModel, videos: Path, out: Path, workers: int = 0, progress: bool = False,
    batch_size: int = 8, calibration=None, ivf_above: int = IVF_ABOVE,
) -> dict | None:
    """Creates or updates the index in `out` for the video files under `videos`; returns the report.

    `calibration` (a `calibrate.CalibrationSource`) fits the search confidence on that split and
    stores it; without it an update keeps the index's earlier calibration. From `ivf_above`
    videos on, the shortlist is a faiss IVF built here (`calm.search.shortlist`). Under torchrun every
    rank calls this: rank 0 plans, writes and returns the report, the others encode their share
    of the files (`calm.search.sharded`) and return None.
    """
    started = time.time()

    def encode(paths: list[str], size: int):
        return encoded_batches(model, paths, workers, progress and sharded.is_main(), size)

    if not sharded.is_main():
        sharded.encode_share(encode)
        return None
    try:
        root, out, old, files, left_out, keep, failures, todo = _plan(model, videos, out)
    except Exception as exc:
        sharded.announce_failure(str(exc))
        raise
    old_rows = {v.path for v in old.videos} if old else set()
    generation = (old.generation + 1) if old else 1
    out.mkdir(parents=True, exist_ok=True)
    store.remove_stale(out, old.generation if old else None)
    folder = store.data_dir(out, generation)
    folder.mkdir()
    thumbs = out / store.THUMBS
    thumbs.mkdir(exist_ok=True)
    rows = _Rows(folder)
    entries: list[VideoEntry] = []
    if keep:
        arrays = store.open_arrays(out, old)
        for start in range(0, len(keep), KEEP_CHUNK):
            chunk = [i for i, _ in keep[start : start + KEEP_CHUNK]]
            rows.append({name: np.asarray(arr[chunk]) for name, arr in arrays.items()})
        entries.extend(v for _, v in keep)
        del arrays
    by_path = {str(f.path): f for f in todo}
    new_failures = []
    paths = [str(f.path) for f in todo]
    batches = (sharded.gathered_batches(encode, paths, batch_size) if sharded.active()
               else encode(paths, batch_size))
    for arrays, done, thumbnails, failed in batches:
        for path, reason in failed:
            f = by_path[path]
            new_failures.append({"path": f.rel, "size": f.size, "mtime_ns": f.mtime_ns,
                                 "reason": reason})
        if not done:
            continue
        rows.append(arrays)
        for path, jpeg in zip(done, thumbnails):
            f = by_path[path]
            (thumbs / store.thumbnail_name(f.rel)).write_bytes(jpeg)
            entries.append(VideoEntry(f.rel, f.size, f.mtime_ns))
    rows.finish()
    failures.extend(new_failures)
    shortlist_note = write_shortlist(folder, len(entries), ivf_above) if entries else None
    if calibration is not None:
        from calm.search.calibrate import Collection, calibrate

        collection = Collection([root / e.path for e in entries], store.folder_arrays(folder))
        measured = calibrate(model, calibration, workers, batch_size, progress,
                             collection=collection)
        fitted, duplicates = measured["confidence"], measured["duplicates"]
    else:
        fitted = old.calibration if old else None
        duplicates = old.duplicates if old else None
    manifest = Manifest(
        root=str(root), checkpoint=model_record(model), generation=generation, videos=entries,
        failures=sorted(failures, key=lambda f: f["path"]),
        state_keys=sorted(k[len("state."):] for k in rows.writers if k.startswith("state.")),
        calibration=fitted, duplicates=duplicates,
    )
    present = {store.thumbnail_name(v.path) for v in entries}
    for thumb in thumbs.glob("*.jpg"):
        if thumb.name not in present:
            thumb.unlink(missing_ok=True)
    report = {
        "index": str(out),
        "videos_dir": str(root),
        "checkpoint": manifest.checkpoint["path"],
        "found": len(files),
        "left_out": left_out,
        "indexed": len(entries),
        "new": len(todo) - len(new_failures),
        "kept": len(keep),
        "removed": len(old_rows - {f.rel for f in files}),
        "failed": len(failures),
        "failures": [{"path": f["path"], "reason": f["reason"]} for f in manifest.failures],
        "seconds": round(time.time() - started, 2),
        "workers": workers,
        "processes": sharded.world_size(),
        "calibration": None if fitted is None else fitted["report"],
        "duplicates": duplicates,
    }
    if not files:
        report["note"] = f"no video files under {root}" + (
            f"; {len(left_out)} symbolic links were left out" if left_out else "")
    elif shortlist_note:
        report["note"] = shortlist_note
    store.commit(out, manifest, report)
    return report
