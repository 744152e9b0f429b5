"""The manifest format and artifact loading: a valid artifact loads, and every kind of bad
artifact fails with an ArtifactError naming the field or file."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_runtime_support import LIBRARY, programs, write_artifact, write_manifest

import tessera.runtime as rt
from tessera import TesseraError
from tessera.runtime.cpu import missing_features
from tessera.runtime.manifest import MANIFEST_FILE, VERSION


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    directory = tmp_path_factory.mktemp("artifact")
    return directory, write_artifact(directory)


@pytest.fixture
def artifact(pristine: tuple[Path, dict[str, Any]], tmp_path: Path) -> tuple[Path, dict]:
    """A private copy of the artifact and its manifest data, free to damage."""
    directory = tmp_path / "artifact"
    shutil.copytree(pristine[0], directory)
    return directory, copy.deepcopy(pristine[1])


def test_manifest_round_trips_through_json() -> None:
    data = json.loads(json.dumps(rt.Manifest("1.2.3", rt.cpu.host_target(), (), ()).to_json()))
    assert rt.parse_manifest(data).to_json() == data
    binary = rt.BinarySpec("kernels", LIBRARY, "shared-object", "0" * 64)
    target = rt.TargetSpec("cpu", "x86_64", "linux", "znver5", ("avx2", "avx512f"))
    full = rt.Manifest("0.1.0", target, (binary,), programs(), metadata={"v": 1})
    data = json.loads(json.dumps(full.to_json()))
    parsed = rt.parse_manifest(data)
    assert parsed == full
    assert data["version"] == VERSION
    assert data["programs"]["gather"]["inputs"][0] == {
        "name": "ids",
        "dtype": "i64",
        "shape": ["B", "S"],
        "range": [0, 16],
    }


def test_valid_artifact_loads(artifact: tuple[Path, dict]) -> None:
    loaded = rt.load(artifact[0])
    assert sorted(loaded.programs) == ["affine", "gather", "noop"]
    assert [w.name for w in loaded.weights] == ["w", "table"]
    assert loaded["affine"].spec.outputs[0].shape == ("B", 4)
    with pytest.raises(KeyError, match="no program 'decode'"):
        loaded["decode"]


Edit = Callable[[dict], None]


def _set(path: str, value: Any) -> Edit:
    *parents, last = path.split("/")

    def edit(data: dict) -> None:
        node: Any = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is _DELETE:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return edit


_DELETE = object()


def _both(first: Edit, second: Edit) -> Edit:
    def edit(data: dict) -> None:
        first(data)
        second(data)

    return edit


BAD_MANIFESTS = {
    "wrong version": (
        _set("version", VERSION + 1),
        f"version: manifest version {VERSION + 1} is not supported",
    ),
    "wrong format": (_set("format", "onnx"), "format: expected 'tessera.artifact'"),
    "missing field": (
        _set("programs/affine/inputs/0/dtype", _DELETE),
        "programs.affine.inputs[0].dtype: required field is missing",
    ),
    "wrong field type": (
        _set("programs/affine/inputs/0/shape", "B,4"),
        "programs.affine.inputs[0].shape: expected a list, found a string",
    ),
    "bool for int": (
        _set("programs/affine/symbols/B/min", True),
        "programs.affine.symbols.B.min: expected an integer, found a bool",
    ),
    "unknown dtype": (
        _set("programs/affine/inputs/0/dtype", "float32"),
        "programs.affine.inputs[0].dtype: unknown dtype 'float32'",
    ),
    "undeclared symbol": (
        _set("programs/affine/inputs/0/shape", ["T", 4]),
        "programs.affine.inputs[0].shape: symbol 'T' is not declared",
    ),
    "dynamic weight": (
        _set("programs/affine/weights/0/shape", ["B"]),
        "programs.affine.weights[0].shape: a weight's shape must be static",
    ),
    "range on a float input": (
        _set("programs/affine/inputs/0/range", [0, 4]),
        "programs.affine.inputs[0].range: only integer inputs take a range",
    ),
    "empty range": (
        _set("programs/gather/inputs/0/range", [4, 4]),
        "programs.gather.inputs[0].range: range [4, 4) is empty",
    ),
    "unknown step kind": (
        _set("programs/affine/steps/0/kind", "kernel_launch"),
        "programs.affine.steps[0].kind: step kind 'kernel_launch' is not supported",
    ),
    "step names unknown weight": (
        _set("programs/affine/steps/0/args/1/name", "bias"),
        "programs.affine.steps[0].args[1]: no weight named 'bias'",
    ),
    "step names unknown binary": (
        _set("programs/affine/steps/0/binary", "cuda"),
        "programs.affine.steps[0].binary: no binary named 'cuda'",
    ),
    "output never written": (
        _set("programs/affine/steps/0/args", [{"kind": "input", "name": "x"}]),
        "programs.affine.steps: output 'y' is written by no step",
    ),
    "file outside the folder": (
        _set("binaries/kernels/file", "../kernels.so"),
        "binaries.kernels.file: '../kernels.so' must be a plain file name",
    ),
    "malformed sha256": (
        _set("binaries/kernels/sha256", "abc"),
        "binaries.kernels.sha256: expected 64 lowercase hex digits",
    ),
    "weight disagrees across programs": (
        _both(
            _set("programs/gather/weights/0/name", "w"),
            _set("programs/gather/steps/0/args/1/name", "w"),
        ),
        "weight 'w' is f32[16, 4] here but f32[4] in program 'affine'",
    ),
    "unsupported target": (_set("target/kind", "tpu"), "target.kind: target 'tpu' is not"),
    "cuda artifact without a gpu": (
        lambda data: (_set("target/kind", "cuda")(data), _set("target/arch", "sm_90a")(data)),
        "no CUDA device is present",
    ),
    "cuda artifact with a bad arch": (
        lambda data: (_set("target/kind", "cuda")(data), _set("target/arch", "x86_64")(data)),
        "'x86_64' is not a CUDA architecture",
    ),
    "foreign architecture": (
        _set("target/arch", "riscv64"),
        "the artifact was built for riscv64-linux",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_bad_manifest_is_rejected_naming_the_field(artifact: tuple[Path, dict], case: str) -> None:
    directory, data = artifact
    edit, message = BAD_MANIFESTS[case]
    edit(data)
    write_manifest(directory, data)
    with pytest.raises(rt.ArtifactError) as raised:
        rt.load(directory)
    assert str(directory / MANIFEST_FILE) in str(raised.value)
    assert message in str(raised.value)
    assert isinstance(raised.value, TesseraError)


def test_output_symbols_must_come_from_inputs(artifact: tuple[Path, dict]) -> None:
    directory, data = artifact
    _set("programs/noop/symbols", {"N": {"min": 1, "max": None}, "M": {"min": 1, "max": 2}})(data)
    _set("programs/noop/outputs/0/shape", ["M"])(data)
    write_manifest(directory, data)
    with pytest.raises(rt.ArtifactError, match="symbol 'M' appears in no input shape"):
        rt.load(directory)


def test_missing_binary_names_the_file(artifact: tuple[Path, dict]) -> None:
    directory, _ = artifact
    (directory / LIBRARY).unlink()
    with pytest.raises(rt.ArtifactError, match=rf"{LIBRARY}: missing \(named by binaries.kernels"):
        rt.load(directory)


def test_altered_binary_fails_its_sha256(artifact: tuple[Path, dict]) -> None:
    directory, data = artifact
    with (directory / LIBRARY).open("ab") as stream:
        stream.write(b"\0")
    with pytest.raises(rt.ArtifactError) as raised:
        rt.load(directory)
    assert f"{LIBRARY}: sha256 is " in str(raised.value)
    assert data["binaries"]["kernels"]["sha256"] in str(raised.value)


def test_missing_symbol_names_symbol_and_file(artifact: tuple[Path, dict]) -> None:
    directory, data = artifact
    _set("programs/noop/steps/0/symbol", "_mlir__mlir_ciface_absent")(data)
    write_manifest(directory, data)
    with pytest.raises(rt.ArtifactError, match="does not export '_mlir__mlir_ciface_absent'"):
        rt.load(directory)


def test_missing_or_broken_manifest(tmp_path: Path) -> None:
    with pytest.raises(rt.ArtifactError, match="no manifest"):
        rt.load(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(rt.ArtifactError, match="not valid JSON"):
        rt.load(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text("[]")
    with pytest.raises(rt.ArtifactError, match="expected an object, found a list"):
        rt.load(tmp_path)


def test_missing_cpu_features_are_named() -> None:
    lacking = missing_features(
        ["avx2", "avx512bf16", "amx-tile", "some-new-isa"], frozenset({"avx2"})
    )
    assert lacking == ["avx512bf16", "amx-tile"]  # unknown names are not checked
    assert missing_features(["avx512f"], None) == []  # flags unknown: nothing to check


def test_artifact_for_a_richer_cpu_is_refused(
    artifact: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    directory, data = artifact
    data["target"].update(cpu="sapphirerapids", features=["avx2", "avx512bf16"])
    write_manifest(directory, data)
    monkeypatch.setattr(rt.cpu, "cpu_flags", lambda: frozenset({"sse2", "avx2"}))
    with pytest.raises(rt.ArtifactError) as raised:
        rt.load(directory)
    assert (
        "target.features: the artifact's code was compiled for a sapphirerapids CPU and may "
        in (str(raised.value))
    )
    assert "use avx512bf16, which this CPU lacks" in str(raised.value)
    monkeypatch.setattr(rt.cpu, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    assert rt.load(directory).manifest.target.features == ("avx2", "avx512bf16")
