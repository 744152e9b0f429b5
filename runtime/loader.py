"""Loading an artifact folder: the manifest is validated, every binary is checked against its
sha256 and loaded, and each program becomes a ``Program`` ready for its weights."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from . import cpu, cuda, hip
from .checks import gather_weights
from .manifest import MANIFEST_FILE, ArtifactError, Manifest, TensorSpec
from .manifest_parse import parse_manifest
from .program import Program


def read_manifest(directory: str | Path) -> Manifest:
    """The validated manifest of the artifact in ``directory``."""
    path = Path(directory) / MANIFEST_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ArtifactError("no manifest (is this a tessera artifact folder?)", str(path)) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ArtifactError(f"not valid JSON: {error}", str(path)) from None
    try:
        return parse_manifest(data)
    except ArtifactError as error:
        raise ArtifactError(str(error), str(path)) from None


class Artifact:
    """A loaded artifact: its manifest and one ``Program`` per program it holds."""

    def __init__(
        self, directory: Path, manifest: Manifest, programs: dict[str, Program | cuda.CudaProgram]
    ) -> None:
        self.directory = directory
        self.manifest = manifest
        self.programs = programs

    def __getitem__(self, name: str) -> Program | cuda.CudaProgram:
        program = self.programs.get(name)
        if program is None:
            known = ", ".join(self.programs)
            raise KeyError(f"no program '{name}' in {self.directory} (programs: {known})")
        return program

    @property
    def weights(self) -> tuple[TensorSpec, ...]:
        """Every weight of every program, once, in the order they first appear."""
        seen: dict[str, TensorSpec] = {}
        for program in self.manifest.programs:
            for spec in program.weights:
                seen.setdefault(spec.name, spec)
        return tuple(seen.values())

    def bind(self, weights: Mapping[str, torch.Tensor] | Sequence[torch.Tensor]) -> None:
        """Binds the weights of every program: a state dict, or tensors in ``self.weights``'s
        order. Programs share the tensors (no copy unless a tensor is not contiguous)."""
        specs = self.weights
        # A ROCm build of torch names the AMD GPU "cuda" too.
        device = "cuda" if self.manifest.target.kind in (cuda.KIND, hip.KIND) else "cpu"
        tensors = gather_weights(specs, weights, device=device)
        by_name = {spec.name: tensor for spec, tensor in zip(specs, tensors, strict=True)}
        uploaded: dict[str, torch.Tensor] = {}
        for program in self.programs.values():
            if isinstance(program, cuda.CudaProgram):
                # Each weight goes to the device once, shared by every program.
                if all(s.name in uploaded for s in program.spec.weights):
                    program.share_weights(uploaded)
                    continue
                program.bind(by_name)
                uploaded.update(program.device_weights)
            else:
                program.bind(by_name)


def load(directory: str | Path) -> Artifact:
    """Loads the artifact in ``directory``; raises ``ArtifactError`` naming the bad field or
    file (a missing or altered binary, an unsupported version or target)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    where = str(directory / MANIFEST_FILE)
    kind = manifest.target.kind
    backends = {
        cpu.KIND: cpu.check_target,
        cuda.KIND: cuda.check_target,
        hip.KIND: hip.check_target,
    }
    if kind not in backends:
        raise ArtifactError(
            f"target '{kind}' is not supported by this runtime (supported: {', '.join(backends)})",
            f"{where}: target.kind",
        )
    try:
        backends[kind](manifest.target)
    except ArtifactError as error:
        raise ArtifactError(str(error), where) from None
    images = _read_binaries(directory, manifest)
    if kind == hip.KIND:
        used = {step.binary for p in manifest.programs for step in p.steps}
        kinds = {b.name: b.kind for b in manifest.binaries}
        hip_modules = hip.load_modules({n: (kinds[n], images[n]) for n in sorted(used)})
        hip_programs: dict[str, Program | cuda.CudaProgram] = {
            p.name: hip.HipProgram(p, hip_modules) for p in manifest.programs
        }
        return Artifact(directory, manifest, hip_programs)
    if kind == cuda.KIND:
        used = {step.binary for p in manifest.programs for step in p.steps}
        kinds = {b.name: b.kind for b in manifest.binaries}
        modules = cuda.load_modules({n: (kinds[n], images[n]) for n in sorted(used)})
        cuda_programs: dict[str, Program | cuda.CudaProgram] = {
            p.name: cuda.CudaProgram(p, modules) for p in manifest.programs
        }
        return Artifact(directory, manifest, cuda_programs)
    libraries = {
        b.name: cpu.SharedLibrary(b, directory / b.file, images[b.name]) for b in manifest.binaries
    }
    resolvers = {name: library.resolve for name, library in libraries.items()}
    programs: dict[str, Program | cuda.CudaProgram] = {
        p.name: Program(p, resolvers, keepalive=libraries) for p in manifest.programs
    }
    return Artifact(directory, manifest, programs)


def _read_binaries(directory: Path, manifest: Manifest) -> dict[str, bytes]:
    """Every binary's bytes, each checked against its sha256 (read once: what is checked is
    what is loaded, so a file changed on disk later cannot reach the running program)."""
    images: dict[str, bytes] = {}
    for binary in manifest.binaries:
        path = directory / binary.file
        if not path.is_file():
            raise ArtifactError(
                f"missing (named by binaries.{binary.name} in {MANIFEST_FILE})", str(path)
            )
        # The bytes are read once: they are what is checked and what is loaded, so a file
        # changed on disk later (or while loading) cannot reach the running program.
        data = path.read_bytes()
        actual = hashlib.sha256(data).hexdigest()
        if actual != binary.sha256:
            raise ArtifactError(
                f"sha256 is {actual} but {MANIFEST_FILE} records {binary.sha256} "
                "(the file was altered or belongs to another build)",
                str(path),
            )
        images[binary.name] = data
    return images
