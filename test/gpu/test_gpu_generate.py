"""Generation on the GPU: the artifacts' ``prefill_kv`` and ``decode`` programs (and
``decode_greedy``, whose LM head chooses the token) driven by the
runtime's generation loop over a paged KV cache in GPU memory, against transformers' own
``generate`` on the same card with the same weights, token for token.

The f32 artifacts are used (bf16 greedy tokens flip at near-ties between two implementations).
The weights are the tiny configurations' with larger post-norm and block-output weights, so
that greedy continuations change token and a token fed back wrongly would show. Two left-
padded prompts of different lengths; the sequences run several sliding windows long, and the
longer prompt takes two prefill chunks.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch

from tessera import runtime
from tessera.models.tiny import tiny_gemma
from tessera.runtime import kv_layout
from tessera.runtime.cuda_graph import GraphedProgram
from tessera.runtime.generate import Request, cached_programs, decode_steps
from tessera.runtime.sampling import Sampling

# The generation tests' helpers (and the seeding module they import).
_PYTHON_TESTS = Path(__file__).resolve().parents[1] / "python"
for _folder in (str(_PYTHON_TESTS), str(_PYTHON_TESTS / "generate")):
    if _folder not in sys.path:
        sys.path.insert(0, _folder)

from test_generate_support import left_padded, varied  # noqa: E402

# Two sequences, then one: a batch of one runs the decode step's 1-row GEMVs.
BATCHES = ([21, 9], [21])
NEW_TOKENS = 24


@pytest.mark.gpu
def test_greedy_generation_equals_transformers(artifacts: Path) -> None:
    failures = []
    entries = json.loads((artifacts / "models.json").read_text())
    for entry, lengths in [(e, b) for e in entries if e["dtype"] == "f32" for b in BATCHES]:
        model = varied(tiny_gemma(entry["name"], attn_implementation=entry["attention"])).cuda()
        artifact = runtime.load(artifacts / entry["folder"])
        artifact.bind(dict(model.state_dict()))
        ids, mask = left_padded(lengths, model.config.vocab_size, torch.Generator().manual_seed(0))
        request = Request(NEW_TOKENS, Sampling(), None, frozenset(), pad_token_id=0)
        runs = {}
        # The decode step choosing from its logits, and the greedy step whose LM head chooses
        # (where the artifact has it); each launch by launch, then as a CUDA graph.
        for name in (kv_layout.DECODE_PROGRAM, kv_layout.GREEDY_DECODE_PROGRAM):
            step = artifact.programs.get(name)
            if step is None:
                continue
            for how, program in (("launches", step), ("graph", GraphedProgram(step))):
                programs = cached_programs(artifact.manifest, {**artifact.programs, name: program})
                if name == kv_layout.DECODE_PROGRAM:
                    programs = dataclasses.replace(programs, greedy=None)
                steps = [s.tokens for s in decode_steps(programs, ids, mask.bool(), request)]
                runs[f"{name}, {how}"] = torch.cat([ids, torch.stack(steps, dim=1)], dim=1)
        assert len(runs) == 4, f"{entry['folder']}: no {kv_layout.GREEDY_DECODE_PROGRAM} program"
        with torch.no_grad():
            theirs = model.generate(
                ids.cuda(),
                attention_mask=mask.cuda(),
                do_sample=False,
                pad_token_id=0,
                max_new_tokens=NEW_TOKENS,
                eos_token_id=None,
            ).cpu()
        for how, ours in runs.items():
            same = torch.equal(ours, theirs)
            line = f"{entry['folder']} B{len(lengths)} ({how}): {'equal' if same else 'DIFFERENT'}"
            print(line)
            if not same:
                failures.append(f"{line}\nours   {ours}\ntheirs {theirs}")
    assert not failures, "\n".join(failures)
