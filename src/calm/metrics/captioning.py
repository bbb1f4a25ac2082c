"""Captioning metrics as the COCO caption evaluation (pycocoevalcap) defines them.

Captions are lower-cased and tokenised by Stanford's PTBTokenizer with punctuation removed, then
scored with BLEU-1..4 (corpus level, "closest" reference length), METEOR 1.5, ROUGE-L (beta 1.2)
and CIDEr-D (which pycocoevalcap calls CIDEr; it already includes the x10 factor). Values are
reported x100, as papers do (CIDEr 35.6 = pycocoevalcap 0.356). METEOR and the tokenizer are Java
programs: without Java this module raises instead of approximating, since numbers from another
tokenizer or a METEOR re-implementation are not comparable with published ones.

Imports nothing from calm. pycocoevalcap is imported lazily (optional `caption` extra).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

JAVA_HINT = (
    "METEOR and the PTB tokenizer of the COCO caption evaluation are Java programs; install a "
    "Java runtime (e.g. `apt-get install default-jre-headless`) so that `java` is on PATH"
)
# The order papers print them in.
METRIC_NAMES = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


class JavaNotFoundError(RuntimeError):
    """No `java` executable: METEOR and the PTB tokenizer cannot run."""


def _require_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise JavaNotFoundError(JAVA_HINT)
    return java


def _pycocoevalcap_dir() -> Path:
    try:
        import pycocoevalcap.tokenizer.ptbtokenizer as ptb
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "captioning metrics need pycocoevalcap: pip install 'calm[caption]' "
            "(or pip install pycocoevalcap)"
        ) from exc
    return Path(ptb.__file__).resolve().parent.parent


def ptb_tokenize(sentences: Sequence[str]) -> list[str]:
    """pycocoevalcap's PTBTokenizer (same jar, flags and punctuation list) on a flat list.

    Differs from the wrapper only in plumbing: the temporary file goes to the system temp folder
    (not into site-packages, which may be read-only), the file is read as UTF-8, blank sentences
    skip Java, and the number of lines coming back is checked so captions cannot shift.
    """
    from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS, STANFORD_CORENLP_3_4_1_JAR

    java = _require_java()
    jar = _pycocoevalcap_dir() / "tokenizer" / STANFORD_CORENLP_3_4_1_JAR
    # Any line break would split a caption in two under -preserveLines.
    lines = [" ".join(str(s).splitlines()) for s in sentences]
    todo = [i for i, line in enumerate(lines) if line.strip()]
    out = [""] * len(lines)
    if not todo:
        return out
    fd, path = tempfile.mkstemp(suffix=".txt", prefix="calm-ptb-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("\n".join(lines[i] for i in todo))
        cmd = [java, "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer",
               "-preserveLines", "-lowerCase", "-encoding", "utf-8", path]
        proc = subprocess.run(cmd, capture_output=True, check=False)
    finally:
        os.remove(path)
    if proc.returncode != 0:
        raise RuntimeError(f"PTBTokenizer failed ({proc.returncode}): "
                           f"{proc.stderr.decode(errors='replace')[-2000:]}")
    got = proc.stdout.decode("utf-8").split("\n")
    if got and got[-1] == "" and len(got) == len(todo) + 1:
        got = got[:-1]
    if len(got) != len(todo):
        raise RuntimeError(f"PTBTokenizer returned {len(got)} lines for {len(todo)} captions")
    punctuation = set(PUNCTUATIONS)
    for i, line in zip(todo, got):
        out[i] = " ".join(w for w in line.rstrip().split(" ") if w and w not in punctuation)
    return out


_meteor = None
_meteor_lock = threading.Lock()


def _meteor_scorer():
    """One METEOR process per Python process: starting it loads paraphrase tables (seconds)."""
    global _meteor
    from pycocoevalcap.meteor.meteor import Meteor

    if _meteor is None or _meteor.meteor_p.poll() is not None:
        _meteor = Meteor()
    return _meteor


def close_meteor() -> None:
    """Stops the cached METEOR Java process (it restarts on the next call)."""
    global _meteor
    with _meteor_lock:
        if _meteor is not None:
            proc = _meteor.meteor_p
            proc.stdin.close()
            proc.kill()
            proc.wait()
            _meteor = None


def _validate(predictions: Mapping, references: Mapping) -> list:
    if not predictions:
        raise ValueError("no predictions to score")
    missing = [k for k in predictions if k not in references]
    extra = [k for k in references if k not in predictions]
    if missing or extra:
        raise ValueError(
            f"predictions and references must cover the same ids: {len(missing)} predicted ids "
            f"have no references (e.g. {missing[:3]}), {len(extra)} referenced ids have no "
            f"prediction (e.g. {extra[:3]})"
        )
    ids = list(predictions)
    for k in ids:
        if not isinstance(predictions[k], str):
            raise TypeError(f"prediction for {k!r} must be a string, got {type(predictions[k])}")
        refs = references[k]
        if isinstance(refs, str) or not isinstance(refs, Sequence):
            raise TypeError(f"references for {k!r} must be a list of strings, got {type(refs)}")
        if not refs:
            raise ValueError(f"video {k!r} has no reference captions")
        for r in refs:
            if not isinstance(r, str) or not r.strip():
                raise ValueError(f"video {k!r} has an empty or non-string reference: {r!r}")
    return ids


def caption_metrics(
    predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr (x100) of one predicted caption per video id.

    `references` maps the same ids to their (non-empty) lists of reference captions. An empty
    prediction is allowed and scores 0 for its video. Corpus-level scores, as COCO defines them:
    BLEU and METEOR aggregate statistics over the corpus, ROUGE-L and CIDEr average per-video
    scores, and CIDEr's IDF comes from the references of the videos scored together.
    """
    ids = _validate(predictions, references)
    _require_java()
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    flat = [predictions[k] for k in ids]
    for k in ids:
        flat.extend(references[k])
    tokens = ptb_tokenize(flat)
    res, gts, pos = {}, {}, len(ids)
    for i, k in enumerate(ids):
        res[i] = [tokens[i]]
        n = len(references[k])
        gts[i] = tokens[pos : pos + n]
        pos += n
        empty = [references[k][j] for j, r in enumerate(gts[i]) if not r]
        if empty:
            raise ValueError(f"video {k!r}: references {empty} are empty after PTB tokenisation "
                             "(punctuation only)")

    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    with _meteor_lock:
        meteor, _ = _meteor_scorer().compute_score(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    values = [*bleu, meteor, rouge, cider]
    return {name: 100.0 * float(v) for name, v in zip(METRIC_NAMES, values)}
