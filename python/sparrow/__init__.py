"""Sparrow: compress neural networks, store them compactly and run them on the compressed weights.

Load an ONNX or .spw model and run it on numpy arrays::

    import sparrow
    model = sparrow.load("lenet.spw")
    logits = model.run(x)            # x: numpy array [batch, 1, 28, 28]

Compress, inspect, report, benchmark, simulate and export::

    info = sparrow.compress("lenet.onnx", "lenet.spw", {"sparsity": 0.9, "bits": 4})
    sparrow.inspect("lenet.spw")["ratio"]
    sparrow.bench("lenet.spw", batch=1)["median_ms"]

Every failure raises :class:`sparrow.Error` (a ``RuntimeError``) with Sparrow's message, which names
the file, layer and field at fault.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from . import _sparrow
from ._sparrow import Error, __version__

__all__ = [
    "Error",
    "Model",
    "__version__",
    "bench",
    "compress",
    "empty",
    "eval",
    "export",
    "inspect",
    "load",
    "machine",
    "report",
    "sim",
]

ArrayLike = Union[np.ndarray, Sequence[float]]
PathLike = Union[str, "os.PathLike[str]"]

_ALIGNMENT = 64


def _path(p: PathLike) -> str:
    return os.fspath(p)


class Model:
    """A loaded model (ONNX or .spw) ready to run. Obtain one with :func:`load`.

    A .spw model runs on the sparse engine straight from its compressed encoding; an ONNX model on
    the dense executor. Runs of one model are serialized; the GIL is released while it runs, so
    other Python threads (or other models) proceed meanwhile.
    """

    def __init__(self, core: "_sparrow.Model") -> None:
        self._core = core

    @property
    def path(self) -> str:
        """The file the model was loaded from."""
        return self._core.path

    @property
    def threads(self) -> int:
        """Threads the model runs on."""
        return self._core.threads

    @property
    def inputs(self) -> List[Dict[str, Any]]:
        """The declared inputs: ``name``, ``dtype`` and ``shape`` (dims as ints, or the symbol the
        model declares, e.g. ``"batch"``, or None where it declares nothing)."""
        return self._core.inputs

    @property
    def outputs(self) -> List[Dict[str, Any]]:
        """The declared outputs, described as :attr:`inputs`."""
        return self._core.outputs

    def run(self, inputs: Union[ArrayLike, Sequence[ArrayLike], Mapping[str, ArrayLike]]):
        """Runs the model.

        ``inputs``: one array for a model with one input; a list or tuple of arrays (one per input,
        in declaration order); or a dict from input name to array. Float inputs are read as
        float32 and integer inputs as int64. A C-contiguous float32 array aligned to 64 bytes (see
        :func:`empty`) is read in place; any other array is converted first.

        Returns the output as a numpy array when the model has one output, else a list of arrays.
        The arrays are new (they do not change on the next run).
        """
        arrays = self._arrange(inputs)
        outputs = self._core.run(arrays)
        return outputs[0] if len(outputs) == 1 else outputs

    def summary(self, batch: int = 1) -> Dict[str, Any]:
        """The layers as the engine runs them for this batch: name, weight, op type, output shapes,
        parameters, multiply-accumulates and whether it runs sparse."""
        return json.loads(self._core.summary(batch))

    def weight_memory(self) -> Dict[str, int]:
        """Bytes the weights take: in the file and in memory now (engine layouts built so far,
        float32 copies of layers that run dense, uncompressed initializers)."""
        return self._core.weight_memory()

    def _arrange(self, inputs) -> List[np.ndarray]:
        names = [i["name"] for i in self.inputs]
        if isinstance(inputs, Mapping):
            unknown = sorted(set(inputs) - set(names))
            missing = [n for n in names if n not in inputs]
            if unknown or missing:
                raise Error(
                    f"{self.path}: inputs given {sorted(inputs)}, the model's inputs are {names}"
                )
            return [np.asarray(inputs[n]) for n in names]
        if isinstance(inputs, (list, tuple)) and all(isinstance(a, np.ndarray) for a in inputs):
            return list(inputs)
        return [np.asarray(inputs)]

    def __repr__(self) -> str:
        return f"sparrow.Model({self.path!r}, inputs={self.inputs}, threads={self.threads})"


def load(path: PathLike, *, threads: int = 0, sparse: bool = True, weight_memory: float = 3.0) -> Model:
    """Loads an ONNX (``.onnx``) or compressed (``.spw``) model.

    ``threads``: 0 for one per hardware thread. ``sparse``: False runs a .spw model decompressed on
    the dense executor. ``weight_memory``: the engine's layouts of the compressed weights take at
    most this many times their bytes in the file (0: the fastest layouts whatever their size).
    """
    return Model(_sparrow.Model(_path(path), threads, sparse, weight_memory))


def empty(shape: Sequence[int], dtype: Any = np.float32) -> np.ndarray:
    """An uninitialized C-contiguous array aligned to 64 bytes, which :meth:`Model.run` reads in
    place (no copy)."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    raw = np.empty(count * dtype.itemsize + _ALIGNMENT, dtype=np.uint8)
    offset = (-raw.ctypes.data) % _ALIGNMENT
    return raw[offset : offset + count * dtype.itemsize].view(dtype).reshape(shape)


def _array(value: Union[None, PathLike, ArrayLike], what: str) -> Optional[np.ndarray]:
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        path = _path(value)
        try:
            # Mapped copy-on-write, not read: a float32 array is then read from the file as training
            # uses it (Sparrow views it in place), and nothing is written back.
            return np.load(path, mmap_mode="c", allow_pickle=False)
        except (OSError, ValueError) as e:
            raise Error(f"{what}: cannot read {path}: {e}") from e
    return np.asarray(value)


def compress(
    model: PathLike,
    output: PathLike,
    recipe: Optional[Mapping[str, Any]] = None,
    *,
    data: Union[None, PathLike, ArrayLike] = None,
    labels: Union[None, PathLike, ArrayLike] = None,
    test_data: Union[None, PathLike, ArrayLike] = None,
    test_labels: Union[None, PathLike, ArrayLike] = None,
    retrain: Optional[Mapping[str, Any]] = None,
    distill: Union[bool, Mapping[str, Any]] = False,
    threads: int = 0,
    progress: Optional[Callable[[Dict[str, Any]], None]] = None,
) -> Dict[str, Any]:
    """Compresses an ONNX model into a .spw file (written atomically) and returns what
    :func:`inspect` reports about it, with ``kept_float``: the layers left float32 (``min_weights``
    in the recipe, or an encoding that would be larger than float32) and why.

    ``recipe``: the settings of ``sparrow compress --recipe`` as a dict, e.g. ``{"sparsity": 0.9,
    "bits": {"conv": 8, "fc": 5}, "layers": {"fc3": {"exclude": True}}}``.

    With ``data`` (numpy array or .npy path; inputs laid out and normalized as the model expects)
    and ``labels`` (one class index per input), the model is pruned in steps with masked
    retraining, then its codebooks are fine-tuned (trained quantization); ``retrain`` sets
    ``prune_steps``, ``retrain_epochs``, ``retrain_lr``, ``finetune_epochs``, ``finetune_lr``,
    ``batch`` and ``seed``. ``distill`` (True, or ``{"loss": "kl" | "mse", "temperature": 4,
    "weight": 1}``) retrains by knowledge distillation with the source model as the teacher; labels
    are then optional (``weight`` < 1 mixes in cross-entropy on them). With ``test_data`` the
    result carries ``accuracy_before`` and ``accuracy_after`` (with ``test_labels``) or the
    compressed model's ``agreement`` with the source (``top1``, ``max_abs_difference``,
    ``mean_abs_difference``).

    ``progress`` is called with a dict per event: ``{"stage": "compress", "layer", "done",
    "total"}`` per compressed layer, ``{"stage": "retrain" | "finetune", "step", "epoch", "loss",
    "train_accuracy", "seconds"}`` per training epoch. An exception it raises is raised again when
    compression ends.
    """
    result = _sparrow.compress(
        _path(model),
        _path(output),
        json.dumps(dict(recipe or {})),
        _array(data, "data"),
        _array(labels, "labels"),
        _array(test_data, "test_data"),
        _array(test_labels, "test_labels"),
        json.dumps(dict(retrain or {}, **({"distill": distill if isinstance(distill, bool) else dict(distill)}
                                            if distill else {}))),
        threads,
        progress,
    )
    return json.loads(result)


def inspect(path: PathLike) -> Dict[str, Any]:
    """A .spw file's layers (shape, kept weights, bits, layout, bytes) and where every byte of the
    file goes: what ``sparrow inspect --json`` prints."""
    return json.loads(_sparrow.inspect(_path(path)))


def export(spw: PathLike, output: PathLike) -> Dict[str, Any]:
    """Writes a .spw model as a dense float32 ONNX model; returns the file written, its bytes and
    parameters."""
    return json.loads(_sparrow.export_onnx(_path(spw), _path(output)))


def report(
    model: PathLike,
    output: Optional[PathLike] = None,
    *,
    source: Optional[PathLike] = None,
    bins: int = 120,
    sensitivity: Optional[PathLike] = None,
) -> Dict[str, Any]:
    """Writes a compressed model's report (an SVG per layer, report.json, index.html) into
    ``output`` (default: MODEL.report); ``source``, the uncompressed ONNX model, adds its weight
    histograms; ``sensitivity``, a ``sparrow sensitivity --json`` file of the source, adds its
    curves and each layer's proposed sparsity. Returns the paths written."""
    return json.loads(
        _sparrow.report(
            _path(model),
            _path(output) if output else "",
            _path(source) if source else "",
            bins,
            _path(sensitivity) if sensitivity else "",
        )
    )


def sim(
    model: PathLike,
    *,
    config: Optional[Mapping[str, Any]] = None,
    input: Union[None, PathLike, ArrayLike] = None,
    threads: int = 0,
) -> Dict[str, Any]:
    """Simulates the EIE accelerator cycle by cycle on each compressed FC layer of a .spw model,
    fed the activations of one input (default: uniform random); ``config`` overrides the
    architecture (``sparrow sim --print-config`` lists the keys). Returns per-layer cycles, energy
    and the check against the fixed-point reference: what ``sparrow sim MODEL --json`` prints."""
    return json.loads(
        _sparrow.simulate(
            _path(model), json.dumps(dict(config)) if config else "", _array(input, "input"), threads
        )
    )


def bench(
    model: Union[PathLike, Model],
    *,
    batch: int = 1,
    runs: int = 50,
    warmup: int = 5,
    threads: int = 0,
) -> Dict[str, Any]:
    """Times ``runs`` runs of a model (after ``warmup`` untimed ones) at a batch size, on inputs of
    its declared shapes filled from a fixed seed, timed inside the library (no Python overhead).
    Returns the times in milliseconds (``runs_ms``) with their ``min_ms``, ``median_ms``,
    ``p90_ms`` and ``max_ms``, and the machine."""
    if runs < 1 or warmup < 0 or batch < 1:
        raise Error("bench: runs and batch must be >= 1 and warmup >= 0")
    m = model if isinstance(model, Model) else load(model, threads=threads)
    times = np.array(m._core.time_runs(batch, runs, warmup)) * 1e3
    return {
        "model": m.path,
        "batch": batch,
        "threads": m.threads,
        "runs_ms": times.tolist(),
        "min_ms": float(times.min()),
        "median_ms": float(np.median(times)),
        "p90_ms": float(np.percentile(times, 90)),
        "max_ms": float(times.max()),
        "machine": machine(),
    }


def eval(
    model: Union[PathLike, Model],
    data: Union[PathLike, ArrayLike],
    labels: Union[PathLike, ArrayLike],
    *,
    batch: int = 256,
    threads: int = 0,
) -> Dict[str, Any]:
    """Top-1 accuracy of a classifier (its first output holds the class scores) on ``data`` (inputs
    laid out and normalized as the model expects, along axis 0) against ``labels`` (one class index
    per input); arrays or .npy paths. Returns ``accuracy``, ``correct``, ``total``, ``seconds`` and
    ``images_per_second``, as ``sparrow eval --json`` does."""
    import time

    m = model if isinstance(model, Model) else load(model, threads=threads)
    x, y = _array(data, "data"), _array(labels, "labels")
    if x.ndim < 1 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise Error(f"eval: {x.shape[0] if x.ndim else 0} inputs and labels of shape {list(y.shape)} "
                    "(one label per input expected)")
    if batch < 1:
        raise Error("eval: batch must be >= 1")
    correct = 0
    start = time.perf_counter()
    for begin in range(0, x.shape[0], batch):
        scores = m.run(x[begin : begin + batch])
        first = scores[0] if isinstance(scores, list) else scores
        correct += int(np.count_nonzero(first.reshape(first.shape[0], -1).argmax(axis=1) == y[begin : begin + batch]))
    seconds = time.perf_counter() - start
    total = int(x.shape[0])
    return {
        "model": m.path,
        "accuracy": correct / total if total else 0.0,
        "correct": correct,
        "total": total,
        "seconds": seconds,
        "images_per_second": total / seconds if seconds > 0 else 0.0,
    }


def machine() -> str:
    """The CPU this process runs on, as Sparrow's benchmarks name it."""
    return _sparrow.machine()
