"""Tests of the Python package against the model corpus that the C++ tests generate with PyTorch
(SPARROW_TEST_CORPUS): outputs against PyTorch's, compressed models against their dense form,
every function's result and errors."""

import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import sparrow

CORPUS = Path(os.environ.get("SPARROW_TEST_CORPUS", ""))
WITH_TRAINING = os.environ.get("SPARROW_TEST_WITH_TRAINING", "1").lower() in ("1", "on", "true")
PYTHON_DIR = Path(__file__).resolve().parents[1]


def corpus(name):
    path = CORPUS / name
    if not CORPUS.name or not path.exists():
        pytest.skip(f"model corpus not generated (SPARROW_TEST_CORPUS={CORPUS}); run the C++ tests' corpus_generate")
    return path


def reference(name, kind, index=0):
    return np.load(corpus(f"{name}.{kind}{index}.npy"))


@pytest.fixture(scope="module")
def lenet_spw(tmp_path_factory):
    out = tmp_path_factory.mktemp("spw") / "lenet5.spw"
    sparrow.compress(corpus("lenet5_op13.onnx"), out, {"sparsity": 0.9, "bits": 4})
    return out


@pytest.mark.parametrize("name", ["lenet5_op13", "cnn_bn_op13", "mlp_op13", "view_flatten_op13"])
def test_onnx_outputs_match_pytorch(name):
    model = sparrow.load(corpus(f"{name}.onnx"))
    y = model.run(reference(name, "in"))
    expected = reference(name, "out")
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


def test_several_outputs_come_as_a_list():
    model = sparrow.load(corpus("auto_pad_op11.onnx"))
    ys = model.run(reference("auto_pad_op11", "in"))
    assert isinstance(ys, list) and len(ys) == len(model.outputs) == 3
    for i, y in enumerate(ys):
        np.testing.assert_allclose(y, reference("auto_pad_op11", "out", i), rtol=1e-4, atol=1e-5)


def test_several_inputs_by_list_or_by_name():
    model = sparrow.load(corpus("batch_matmul_op13.onnx"))
    a, b = reference("batch_matmul_op13", "in", 0), reference("batch_matmul_op13", "in", 1)
    by_list = model.run([a, b])
    by_name = model.run({model.inputs[1]["name"]: b, model.inputs[0]["name"]: a})
    for i in range(3):
        np.testing.assert_allclose(by_list[i], reference("batch_matmul_op13", "out", i), rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(by_list[i], by_name[i])


def test_outputs_are_copies_that_later_runs_leave_alone():
    model = sparrow.load(corpus("mlp_op13.onnx"))
    x = reference("mlp_op13", "in")
    first = model.run(x)
    kept = first.copy()
    model.run(np.zeros_like(x))
    np.testing.assert_array_equal(first, kept)


def test_aligned_views_and_converted_copies_give_the_same_outputs():
    model = sparrow.load(corpus("lenet5_op13.onnx"))
    x = reference("lenet5_op13", "in").astype(np.float32)
    aligned = sparrow.empty(x.shape)
    assert aligned.ctypes.data % 64 == 0 and aligned.flags["C_CONTIGUOUS"]
    aligned[...] = x
    misaligned = np.frombuffer(b"\0" * 4 + x.tobytes(), dtype=np.float32, offset=4).reshape(x.shape)
    assert misaligned.ctypes.data % 64 != 0
    strided = np.asfortranarray(x)
    as_float64 = x.astype(np.float64)
    expected = model.run(aligned)
    for variant in (misaligned, strided, as_float64):
        np.testing.assert_array_equal(model.run(variant), expected)
    np.testing.assert_allclose(expected, reference("lenet5_op13", "out"), rtol=1e-4, atol=1e-5)


def test_declared_shapes_keep_their_symbols():
    model = sparrow.load(corpus("lenet5_op13.onnx"))
    assert model.inputs[0]["shape"][0] == "batch"
    assert model.inputs[0]["shape"][1:] == [1, 28, 28]
    assert model.inputs[0]["dtype"] == "float32"


def test_spw_runs_sparse_like_its_dense_form(lenet_spw):
    x = reference("lenet5_op13", "in")
    sparse = sparrow.load(lenet_spw).run(x)
    dense = sparrow.load(lenet_spw, sparse=False).run(x)
    np.testing.assert_allclose(sparse, dense, rtol=1e-5, atol=1e-5 * np.abs(dense).max())


def test_compress_reports_progress_and_inspect_agrees(tmp_path):
    events = []
    out = tmp_path / "m.spw"
    result = sparrow.compress(
        corpus("lenet5_op13.onnx"),
        out,
        {"sparsity": 0.8, "bits": 4, "layers": {"fc2.weight": {"exclude": True}}},
        progress=events.append,
    )
    assert [e["done"] for e in events] == [1, 2, 3, 4]
    assert {e["total"] for e in events} == {4} and {e["stage"] for e in events} == {"compress"}
    assert result.pop("kept_float") == []
    assert result == sparrow.inspect(out)
    layers = {l["name"]: l for l in result["layers"]}
    assert "fc2.weight" not in layers
    assert abs(layers["fc1.weight"]["kept_fraction"] - 0.2) < 0.01
    assert result["ratio"] > 4
    assert result["metadata"]["options"]["layers"]["fc2.weight"]["exclude"] is True


def test_recipes_balance_and_factorize(tmp_path):
    src = corpus("mlp_op13.onnx")
    out = tmp_path / "m.spw"
    result = sparrow.compress(src, out, {"sparsity": 0.75, "balance": 4, "lowrank": "params=0.4", "bits": 6})
    factorized = result["metadata"]["factorized"]
    assert factorized, "the MLP's fully connected layers are factorized"
    for f in factorized:
        assert f["rank"] * (f["rows"] + f["cols"]) <= 0.4 * f["rows"] * f["cols"]
    assert result["balance_partitions"] == 4
    for layer in result["layers"]:  # Gemm weights [out, in]: at least 4 rows fill the 4 partitions
        if layer["shape"][0] >= 4:
            assert layer["balance"]["load_balance"] == 1.0, layer["name"]
    x = np.random.RandomState(0).rand(*[d if isinstance(d, int) else 2 for d in sparrow.load(src).inputs[0]["shape"]])
    assert sparrow.load(out).run(x.astype(np.float32)).shape == sparrow.load(src).run(x.astype(np.float32)).shape
    with pytest.raises(sparrow.Error, match="lowrank"):
        sparrow.compress(src, tmp_path / "bad.spw", {"lowrank": 3})
    by_column = sparrow.compress(src, tmp_path / "c.spw", {"sparsity": 0.75, "balance": 4, "balance_scope": "column"})
    assert by_column["metadata"]["options"]["balance_scope"] == "column"
    assert all(0 < layer["balance"]["column_balance"] <= 1 for layer in by_column["layers"])
    with pytest.raises(sparrow.Error, match="balance_scope"):
        sparrow.compress(src, tmp_path / "bad.spw", {"balance": 4, "balance_scope": "rows"})


def test_recipes_prune_in_blocks(tmp_path):
    src = corpus("mlp_op13.onnx")
    out = tmp_path / "m.spw"
    result = sparrow.compress(src, out, {"sparsity": 0.75, "block": "4x1", "bits": 6})
    assert result["metadata"]["options"]["block"] == "4x1"
    x = np.random.RandomState(1).rand(*[d if isinstance(d, int) else 16 for d in sparrow.load(src).inputs[0]["shape"]])
    assert sparrow.load(out).run(x.astype(np.float32)).shape == sparrow.load(src).run(x.astype(np.float32)).shape
    with pytest.raises(sparrow.Error, match="ROWSxCOLS"):
        sparrow.compress(src, tmp_path / "bad.spw", {"sparsity": 0.5, "block": "4by1"})


def test_recipes_factorize_convolutions_by_cp_and_grouped_tucker(tmp_path):
    src = corpus("lenet5_op13.onnx")
    x = np.random.RandomState(2).rand(2, *sparrow.load(src).inputs[0]["shape"][1:]).astype(np.float32)
    for rule, method in (("params=0.5+cp", "cp"), ("params=0.5+groups=2", "tucker2")):
        out = tmp_path / "m.spw"
        result = sparrow.compress(src, out, {"lowrank": rule, "sparsity": 0, "bits": 8})
        convs = [f for f in result["metadata"]["factorized"] if len(f["factors"]) == 3]
        assert convs and all(f["method"] == method for f in convs), (rule, convs)
        assert result["metadata"]["options"]["lowrank"] == rule
        assert sparrow.load(out).run(x).shape == sparrow.load(src).run(x).shape
    with pytest.raises(sparrow.Error, match="CP takes rank=N or params=F"):
        sparrow.compress(src, tmp_path / "bad.spw", {"lowrank": "energy=0.9+cp"})


def test_structured_pruning_shrinks_the_model(tmp_path):
    src = corpus("lenet5_op13.onnx")
    out = tmp_path / "m.spw"
    result = sparrow.compress(src, out, {"structured": "l2=0.5", "bits": 8})
    groups = result["metadata"]["structured"]
    pruned = [g for g in groups if g["kept"] < g["channels"]]
    assert pruned, "the convolutions and the hidden fully connected layer lose channels"
    for g in pruned:  # round half away from zero, as the library rounds
        assert g["kept"] == g["channels"] - math.floor(0.5 * g["channels"] + 0.5) and g["kept_whole"] == ""
    assert any(g["kept_whole"] for g in groups), "the output layer's channels reach the graph output"
    macs = result["metadata"]["macs"]
    assert macs["after"] < macs["before"] / 2
    onnx = pytest.importorskip("onnx")
    source_weights = sum(int(np.prod(t.dims)) for t in onnx.load(str(src)).graph.initializer if t.data_type == 1)
    assert result["dense_fp32_bytes"] == 4 * source_weights, "the ratio stays against the model given"
    x = np.random.RandomState(0).rand(2, *sparrow.load(src).inputs[0]["shape"][1:]).astype(np.float32)
    assert sparrow.load(out).run(x).shape == sparrow.load(src).run(x).shape
    with pytest.raises(sparrow.Error, match="structured"):
        sparrow.compress(src, tmp_path / "bad.spw", {"structured": "l1=1.5"})


def test_progress_callback_errors_are_raised(tmp_path):
    def fail(event):
        raise ValueError("stop here")

    with pytest.raises(ValueError, match="stop here"):
        sparrow.compress(corpus("mlp_op13.onnx"), tmp_path / "m.spw", {"sparsity": 0.5}, progress=fail)
    assert not (tmp_path / "m.spw").exists(), "a failed callback stops the compression before writing"


@pytest.mark.skipif(not WITH_TRAINING, reason="this build has no training (SPARROW_WITH_TRAINING=OFF)")
def test_compress_with_retraining_from_numpy(tmp_path):
    model = sparrow.load(corpus("mlp_op13.onnx"))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((384, 784)).astype(np.float32)
    labels = model.run(x).argmax(axis=1)  # the model's own answers: it starts at 100% accuracy
    np.save(tmp_path / "labels.npy", labels[:256])
    events = []
    result = sparrow.compress(
        corpus("mlp_op13.onnx"),
        tmp_path / "m.spw",
        {"sparsity": 0.7, "bits": 5},
        data=x[:256],
        labels=tmp_path / "labels.npy",  # a path works as well as an array
        test_data=x[256:],
        test_labels=labels[256:],
        retrain={"prune_steps": 1, "retrain_epochs": 1, "finetune_epochs": 1, "batch": 64},
        threads=1,
        progress=events.append,
    )
    assert result["accuracy_before"] == 1.0
    assert 0 <= result["accuracy_after"] <= 1
    stages = [e["stage"] for e in events]
    assert "retrain" in stages and "finetune" in stages and "compress" in stages
    assert all(np.isfinite(e["loss"]) for e in events if e["stage"] != "compress")
    assert result["metadata"]["retrain"]["prune_steps"] == 1


@pytest.mark.skipif(not WITH_TRAINING, reason="this build has no training (SPARROW_WITH_TRAINING=OFF)")
def test_retraining_from_a_mapped_npy_file_gives_the_same_file_as_from_the_array(tmp_path):
    model = sparrow.load(corpus("mlp_op13.onnx"))
    x = np.random.default_rng(1).standard_normal((128, 784)).astype(np.float32)
    labels = model.run(x).argmax(axis=1)
    np.save(tmp_path / "x.npy", x)
    settings = dict(retrain={"prune_steps": 1, "retrain_epochs": 2, "finetune_epochs": 1, "batch": 32}, threads=1)
    sparrow.compress(corpus("mlp_op13.onnx"), tmp_path / "a.spw", {"sparsity": 0.5}, data=x, labels=labels, **settings)
    sparrow.compress(
        corpus("mlp_op13.onnx"), tmp_path / "b.spw", {"sparsity": 0.5}, data=tmp_path / "x.npy", labels=labels, **settings
    )
    unaligned = np.empty(x.size + 1, np.float32)[1:].reshape(x.shape)  # 4 bytes off: copied
    unaligned[...] = x
    sparrow.compress(corpus("mlp_op13.onnx"), tmp_path / "c.spw", {"sparsity": 0.5}, data=unaligned, labels=labels, **settings)
    # The same weights (the files differ only in the recorded seconds): the same outputs, bit for bit.
    outputs = [sparrow.load(tmp_path / f"{name}.spw").run(x) for name in "abc"]
    assert np.array_equal(outputs[0], outputs[1]) and np.array_equal(outputs[0], outputs[2])
    assert np.array_equal(np.load(tmp_path / "x.npy"), x), "the file is left as it was"

    # Trained on in place, not copied: inputs zeroed during the first epoch change what later epochs
    # learn, for an aligned array and for a mapped file alike; a copied (misaligned) array does not.
    def zeroing(array):
        def on_event(event):
            if event["stage"] == "retrain":
                array[...] = 0

        return on_event

    aligned = sparrow.empty(x.shape)
    aligned[...] = x
    mapped = np.load(tmp_path / "x.npy", mmap_mode="c")
    for name, array, in_place in [("d", aligned, True), ("e", mapped, True), ("f", unaligned, False)]:
        sparrow.compress(corpus("mlp_op13.onnx"), tmp_path / f"{name}.spw", {"sparsity": 0.5}, data=array,
                         labels=labels, progress=zeroing(array), **settings)
        changed = not np.array_equal(sparrow.load(tmp_path / f"{name}.spw").run(x), outputs[0])
        assert changed == in_place, name
    assert np.array_equal(np.load(tmp_path / "x.npy"), x), "copy-on-write: the file is left as it was"


def test_compress_inspect_and_eval_entirely_from_python(tmp_path):
    source = corpus("lenet5_op13.onnx")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((300, 1, 28, 28)).astype(np.float32)
    labels = sparrow.load(source).run(x).argmax(axis=1)  # the source model's answers
    dense = sparrow.eval(source, x, labels, batch=64)
    assert dense["accuracy"] == 1.0 and dense["total"] == 300 and dense["correct"] == 300
    sparrow.compress(source, tmp_path / "m.spw", {"sparsity": 0.5, "bits": 8})
    assert sparrow.inspect(tmp_path / "m.spw")["layers"][0]["weight_bits"] == 8
    np.save(tmp_path / "x.npy", x)
    compressed = sparrow.eval(tmp_path / "m.spw", tmp_path / "x.npy", labels, batch=128)
    assert compressed["total"] == 300 and 0.5 < compressed["accuracy"] <= 1.0
    expected = np.count_nonzero(sparrow.load(tmp_path / "m.spw").run(x).argmax(axis=1) == labels)
    assert compressed["correct"] == expected
    with pytest.raises(sparrow.Error, match="one label per input"):
        sparrow.eval(source, x, labels[:10])


@pytest.mark.skipif(not os.environ.get("SPARROW_CLI"), reason="SPARROW_CLI not set")
def test_outputs_are_bit_identical_to_sparrow_run(lenet_spw, tmp_path):
    x = np.random.default_rng(3).standard_normal((5, 1, 28, 28)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    subprocess.run(
        [os.environ["SPARROW_CLI"], "--quiet", "--threads", "1", "run", str(lenet_spw), "-i", str(tmp_path / "x.npy"),
         "-o", str(tmp_path / "y.npy")],
        check=True,
    )
    np.testing.assert_array_equal(sparrow.load(lenet_spw, threads=1).run(x), np.load(tmp_path / "y.npy"))


@pytest.mark.skipif(not WITH_TRAINING, reason="this build has no training (SPARROW_WITH_TRAINING=OFF)")
def test_compress_by_distillation_without_labels(tmp_path):
    # The corpus MLP's outputs differ little between inputs, so agreement is measured on the rows it
    # learned from; the library tests check what distillation learns on a real task.
    x = np.random.default_rng(4).standard_normal((300, 784)).astype(np.float32)
    events = []

    def compress(epochs, progress=None):
        return sparrow.compress(
            corpus("mlp_op13.onnx"),
            tmp_path / "m.spw",
            {"sparsity": 0.8, "bits": 5},
            data=x,
            test_data=x,
            retrain={"prune_steps": 1, "retrain_epochs": epochs, "finetune_epochs": epochs, "retrain_lr": 0.05},
            distill={"loss": "mse"},
            threads=1,
            progress=progress,
        )

    untrained = compress(0)
    result = compress(3, events.append)
    assert result["agreement"]["top1"] > untrained["agreement"]["top1"] + 0.08
    assert result["agreement"]["mean_abs_difference"] < 0.95 * untrained["agreement"]["mean_abs_difference"]
    assert "accuracy_before" not in result
    assert result["agreement"]["max_abs_difference"] >= result["agreement"]["mean_abs_difference"] > 0
    assert result["metadata"]["retrain"]["distill"] == {"loss": "mse", "temperature": 4.0, "weight": 1.0}
    assert {e["stage"] for e in events} == {"compress", "retrain", "finetune"}
    with pytest.raises(sparrow.Error, match="needs distillation"):
        sparrow.compress(corpus("mlp_op13.onnx"), tmp_path / "n.spw", {}, data=x)
    with pytest.raises(sparrow.Error, match="temperature"):
        sparrow.compress(corpus("mlp_op13.onnx"), tmp_path / "n.spw", {}, data=x, distill={"temperature": 0})


def test_bench_reports_spread_and_machine(lenet_spw):
    result = sparrow.bench(lenet_spw, batch=2, runs=7, warmup=1, threads=1)
    assert len(result["runs_ms"]) == 7 and result["batch"] == 2 and result["threads"] == 1
    assert 0 < result["min_ms"] <= result["median_ms"] <= result["p90_ms"] <= result["max_ms"]
    assert result["machine"] == sparrow.machine() and result["machine"]


def test_sim_checks_each_fc_layer_against_fixed_point(lenet_spw):
    result = sparrow.sim(lenet_spw, config={"pes": 16})
    assert result["config"]["pes"] == 16
    assert [l["functional"]["layer"] for l in result["layers"]] == ["fc1.weight", "fc2.weight"]
    for layer in result["layers"]:
        assert layer["functional"]["bit_exact_with_fixed_point_reference"] is True
        assert layer["cycles"] > 0


def test_report_writes_its_files(lenet_spw, tmp_path):
    result = sparrow.report(lenet_spw, tmp_path / "report", source=corpus("lenet5_op13.onnx"))
    assert Path(result["page"]).exists() and Path(result["json"]).exists()
    assert len(result["plots"]) == 4 and all(Path(p).read_text().startswith("<svg") for p in result["plots"])
    assert result["tables"] == [p[: -len(".svg")] + ".csv" for p in result["plots"]]
    info = sparrow.inspect(lenet_spw)
    for layer, table in zip(info["layers"], result["tables"]):
        rows = [r.split(",") for r in Path(table).read_text().splitlines()]
        assert rows[0] == ["series", "index", "value", "low", "high", "weights"]
        counts = [int(r[5]) for r in rows[1:] if r[0] == "shared value"]
        bins = [int(r[5]) for r in rows[1:] if r[0] == "source bin"]
        assert len(counts) == 2 ** layer["weight_bits"] - 1 and len(bins) == 120
        assert sum(bins) == layer["weights"]
        assert sum(counts) == layer["kept"], layer["name"]


def test_export_gives_the_dense_model(lenet_spw, tmp_path):
    result = sparrow.export(lenet_spw, tmp_path / "dense.onnx")
    assert result["parameters"] > 0 and result["file_bytes"] > 0
    x = reference("lenet5_op13", "in")
    np.testing.assert_allclose(
        sparrow.load(tmp_path / "dense.onnx").run(x), sparrow.load(lenet_spw, sparse=False).run(x), rtol=1e-6
    )


def test_summary_and_weight_memory(lenet_spw):
    model = sparrow.load(lenet_spw)
    summary = model.summary(batch=3)
    assert summary["input_shapes"] == [[3, 1, 28, 28]]
    assert any(l["sparse"] and l["weight"] == "fc1.weight" for l in summary["layers"])
    memory = model.weight_memory()
    assert memory["compressed_in_file"] > 0 and memory["decompressed"] == 0


def test_errors_carry_sparrow_messages(tmp_path, lenet_spw):
    with pytest.raises(sparrow.Error, match="no such file"):
        sparrow.load(tmp_path / "missing.spw")
    with pytest.raises(sparrow.Error, match=r"expected \.onnx or \.spw"):
        sparrow.load(tmp_path / "model.txt")
    broken = tmp_path / "broken.spw"
    broken.write_bytes(lenet_spw.read_bytes()[:100])
    with pytest.raises(sparrow.Error, match="broken.spw"):
        sparrow.load(broken)
    model = sparrow.load(lenet_spw)
    with pytest.raises(sparrow.Error, match="1 inputs, 2 arrays"):
        model.run([np.zeros((1, 1, 28, 28), np.float32)] * 2)
    with pytest.raises(sparrow.Error, match="lenet5.spw"):
        model.run(np.zeros((1, 3, 28, 28), np.float32))
    with pytest.raises(sparrow.Error, match="inputs given"):
        model.run({"nope": np.zeros((1, 1, 28, 28), np.float32)})
    with pytest.raises(sparrow.Error, match="spars"):
        sparrow.compress(corpus("mlp_op13.onnx"), tmp_path / "m.spw", {"sparsity": 1.5})
    with pytest.raises(sparrow.Error, match="retrain settings need data"):
        sparrow.compress(corpus("mlp_op13.onnx"), tmp_path / "m.spw", {}, retrain={"prune_steps": 2})
    with pytest.raises(sparrow.Error, match="one label per input"):
        sparrow.compress(
            corpus("mlp_op13.onnx"), tmp_path / "m.spw", {}, data=np.zeros((4, 784)), labels=np.zeros(3, int)
        )
    assert not (tmp_path / "m.spw").exists()
    assert issubclass(sparrow.Error, RuntimeError)


def test_runs_release_the_gil():
    model = sparrow.load(corpus("lenet5_op13.onnx"), threads=1)
    x = np.random.default_rng(1).standard_normal((256, 1, 28, 28)).astype(np.float32)
    ticks = []
    stop = threading.Event()

    def count():
        while not stop.is_set():
            ticks.append(1)

    # With a long switch interval the main thread keeps the GIL from `before` to `during` unless
    # run() releases it: only then can the counter thread tick in between.
    counter = threading.Thread(target=count)
    model.run(x)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.5)
    try:
        counter.start()
        before = len(ticks)
        model.run(x)
        during = len(ticks) - before
    finally:
        stop.set()
        counter.join()
        sys.setswitchinterval(interval)
    assert during > 0


def test_threads_sharing_a_model_take_turns():
    model = sparrow.load(corpus("lenet5_op13.onnx"), threads=1)
    x = reference("lenet5_op13", "in")
    expected = model.run(x)
    results, errors = [], []

    def work():
        try:
            for _ in range(30):
                results.append(np.array_equal(model.run(x), expected))
                model.weight_memory()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "runs of one model deadlocked"
    assert not errors and len(results) == 90 and all(results)


def test_version_matches_the_project():
    text = (PYTHON_DIR / "pyproject.toml").read_text()
    assert f'version = "{sparrow.__version__}"' in text


@pytest.mark.skipif(not os.environ.get("SPARROW_TEST_BUILD_DIR"), reason="SPARROW_TEST_BUILD_DIR not set")
def test_pip_installs_the_package_offline(tmp_path):
    target = tmp_path / "site"
    env = dict(os.environ, SPARROW_BUILD_DIR=os.environ["SPARROW_TEST_BUILD_DIR"])
    env.pop("PYTHONPATH", None)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-build-isolation", "--no-deps",
         "--no-cache-dir", "--target", str(target), str(PYTHON_DIR)],
        check=True, env=env, cwd=tmp_path,
    )
    assert (target / "sparrow" / "py.typed").exists() and (target / "sparrow" / "_sparrow.pyi").exists()
    script = (
        "import sys, numpy as np, sparrow; "
        f"assert sparrow.__file__.startswith({str(target)!r}), sparrow.__file__; "
        f"m = sparrow.load({str(corpus('mlp_op13.onnx'))!r}); "
        "print(m.run(np.zeros((2, 784), np.float32)).shape)"
    )
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert out.stdout.strip() == "(2, 10)"
    if WITH_TRAINING:
        assert (target / "sparrow" / "libsparrow_training.so").exists()
