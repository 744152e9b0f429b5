"""``tessera generate``: the tokens it prints are those of ``CompiledModel.generate``, printed
as they come (ids for a tiny model, text through a checkpoint's tokenizer), and bad input is
one line on stderr with a non-zero status."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_support import one_error_line, run

import tessera
from tessera.cli_generate import TextStream, parse_ids, write_ids, write_text
from tessera.errors import RuntimeInputError
from tessera.models.tiny import tiny_gemma

# The model of test_cli.py too: one compile serves both files (the session's cache).
NAME = "gemma1-mqa"
TINY = f"tiny:{NAME}"
PROMPT = [2, 17, 42, 100]


@pytest.fixture(scope="module")
def compiled() -> tessera.CompiledModel:
    """What the command compiles for the tiny model: the reference it must agree with."""
    return tessera.compile(tiny_gemma(NAME), "cpu")


def new_tokens(model: tessera.CompiledModel, prompt: list[int], **options: Any) -> list[int]:
    sequences = model.generate([prompt], **options)
    assert isinstance(sequences, torch.Tensor)
    return [int(token) for token in sequences[0, len(prompt) :]]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model saved as a Hugging Face checkpoint with a word-level tokenizer: one word
    per id of its vocabulary (``<pad>``, ``<eos>``, ``<bos>``, ``<unk>``, then ``w4``...),
    built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("checkpoint")
    model = tiny_gemma(NAME)
    assert isinstance(model, PreTrainedModel)
    model.save_pretrained(folder)
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    words = specials + [f"w{i}" for i in range(len(specials), model.config.vocab_size)]
    vocabulary = {word: i for i, word in enumerate(words)}
    assert (vocabulary["<pad>"], vocabulary["<eos>"]) == (0, 1), "the config's pad and end ids"
    backend = Tokenizer(models.WordLevel(vocabulary, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    tokenizer.save_pretrained(folder)
    return folder


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(["generate", "--help"], capsys)
    assert status == 0 and err == ""
    assert out.startswith("usage: tessera generate")
    status, out, _ = run(["--help"], capsys)
    assert status == 0 and re.search(r"^\s+generate\s", out, re.M)


@pytest.mark.parametrize(
    "prompt",
    [["--prompt", "2,17,42,100"], ["-p", " 2 17, 42 ,100 "], ["--prompt-ids", "2,17,42,100"]],
    ids=["commas", "spaces", "prompt-ids"],
)
def test_greedy_ids_are_the_librarys(
    prompt: list[str], compiled: tessera.CompiledModel, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = new_tokens(compiled, PROMPT, max_new_tokens=6)
    status, out, err = run(["generate", TINY, *prompt, "--max-new-tokens", "6"], capsys)
    assert status == 0, err
    assert out == " ".join(map(str, expected)) + "\n"


def test_generation_stops_at_the_end_token(
    compiled: tessera.CompiledModel, capsys: pytest.CaptureFixture[str]
) -> None:
    # The tiny models repeat their last token greedily, so a prompt ending in the end token
    # (the config's eos_token_id) ends at once: one token printed, not ten.
    end = compiled.tokens.eos[0]
    expected = new_tokens(compiled, [2, end], max_new_tokens=10)
    assert expected == [end]
    status, out, _ = run(["generate", TINY, "-p", f"2,{end}", "-n", "10"], capsys)
    assert status == 0 and out == f"{end}\n"


def test_seeded_sampling_is_the_librarys_and_repeats(
    compiled: tessera.CompiledModel, capsys: pytest.CaptureFixture[str]
) -> None:
    options = {"temperature": 1.5, "top_k": 50, "top_p": 0.9}
    flags = ["--temperature", "1.5", "--top-k", "50", "--top-p", "0.9"]
    argv = ["generate", TINY, "-p", "2,17,42", "-n", "8", "--do-sample", *flags]
    outputs = []
    for seed in (7, 7, 8):
        status, out, err = run([*argv, "--seed", str(seed)], capsys)
        assert status == 0, err
        outputs.append(out)
    expected = new_tokens(
        compiled, [2, 17, 42], max_new_tokens=8, do_sample=True, seed=7, **options
    )
    assert outputs[0] == outputs[1] == " ".join(map(str, expected)) + "\n"
    assert outputs[2] != outputs[0]


@pytest.mark.parametrize(
    ("argv", "status", "message"),
    [
        (["-p", "1", "-n", "0"], 2, r"argument --max-new-tokens/-n: 0 is not positive"),
        (["-p", "1", "--do-sample", "--temperature", "0"], 1, r"temperature must be a positive"),
        (["-p", "1", "--do-sample", "--temperature", "-1"], 1, r"temperature must be a positive"),
        (["-p", "1", "--do-sample", "--top-p", "1.5"], 1, r"top_p must lie in \(0, 1\]"),
        (["-p", "1", "--do-sample", "--top-p", "0"], 1, r"top_p must lie in \(0, 1\]"),
        (["-p", "1", "--do-sample", "--top-k", "0"], 2, r"argument --top-k: 0 is not positive"),
        (["-p", "1", "--top-k", "-3"], 2, r"argument --top-k: -3 is not positive"),
        (["-p", ""], 1, r"tessera: error: --prompt is empty"),
        (["--prompt-ids", " , "], 1, r"tessera: error: --prompt-ids is empty"),
        (
            ["-p", "hello world"],
            1,
            rf"tessera: error: {TINY} has no tokenizer: --prompt takes token ids .*'hello'",
        ),
        (["--prompt-ids", "1,x"], 1, r"--prompt-ids takes token ids .* found 'x'"),
        # The vocabulary has 203 tokens: the compiled model checks the range.
        (["-p", "1,203"], 1, r"tessera: error: input 'input_ids' holds 203 .* outside \[0, 203\)"),
        (["-p", "1", "-t", "tpu"], 1, r"tessera: error: unknown target 'tpu'"),
        ([], 2, r"one of the arguments --prompt/-p --prompt-ids is required"),
        (["-p", "1", "--prompt-ids", "1"], 2, r"not allowed with argument"),
    ],
)
def test_bad_input_is_one_line_on_stderr(
    argv: list[str], status: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    got, out, err = run(["generate", TINY, *argv], capsys)
    assert got == status and out == ""
    assert re.search(message, one_error_line(err)), err


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("tiny:nope", r"tessera: error: unknown tiny model 'nope'"),
        ("{tmp}/nowhere", r"tessera: error: MODEL '.*nowhere' is neither a checkpoint folder"),
        ("someone/absent-model", r"absent-model.*cache"),
        # A folder without a tokenizer: refused before compiling.
        ("{tmp}", r"tessera: error: .*has no tokenizer: neither tokenizer\.json"),
    ],
)
def test_an_unknown_model_is_one_line(
    model: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["generate", model.format(tmp=tmp_path), "-p", "Hello"]
    status, out, err = run(argv, capsys)
    assert status == 1 and out == ""
    assert re.search(message, one_error_line(err)), err


def test_a_checkpoint_takes_and_prints_text(
    checkpoint: Path, compiled: tessera.CompiledModel, capsys: pytest.CaptureFixture[str]
) -> None:
    from tessera.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(checkpoint)
    prompt = tokenizer("w17 w42 w100")["input_ids"]
    assert prompt == [17, 42, 100]
    expected = new_tokens(compiled, prompt, max_new_tokens=5, do_sample=True, seed=3)
    argv = ["generate", str(checkpoint), "-p", "w17 w42 w100", "-n", "5", "--do-sample"]
    status, out, err = run([*argv, "--seed", "3"], capsys)
    assert status == 0, err
    text = tokenizer.decode(expected, skip_special_tokens=True)
    assert isinstance(text, str) and text.startswith("w")
    assert out == text + "\n"

    # Ids in, ids out, with any model.
    status, out, _ = run([*argv[:2], "--prompt-ids", "17,42,100", *argv[4:], "--seed", "3"], capsys)
    assert status == 0 and out == " ".join(map(str, expected)) + "\n"

    status, out, err = run(["generate", str(checkpoint), "-p", ""], capsys)
    assert status == 1 and out == ""
    assert one_error_line(err) == "tessera: error: --prompt is empty; give the text to continue"


def test_ids_are_written_as_they_come() -> None:
    out = io.StringIO()

    def tokens() -> Iterator[int]:
        yield 5
        assert out.getvalue() == "5"
        yield 17
        assert out.getvalue() == "5 17"

    write_ids(tokens(), out)
    assert out.getvalue() == "5 17\n"


def byte_decode(ids: list[int]) -> str:
    """A byte-level vocabulary: token i is byte i, decoded as UTF-8 the way tokenizers do,
    with a replacement character for bytes that do not make a whole character yet."""
    return bytes(ids).decode("utf-8", errors="replace")


def test_a_character_of_several_tokens_is_written_whole() -> None:
    text = "aé€🙂b"
    out = io.StringIO()
    written = []

    def tokens() -> Iterator[int]:
        for byte in text.encode():
            yield byte
            written.append(out.getvalue())

    write_text(tokens(), byte_decode, out)
    assert out.getvalue() == text + "\n"
    # Every prefix written is whole text, and each character appears with its last byte.
    assert all("\ufffd" not in prefix for prefix in written)
    assert written[:3] == ["a", "a", "aé"]
    assert written[-1] == "aé€🙂b"


def test_text_stream_hands_out_only_what_is_new() -> None:
    stream = TextStream(byte_decode)
    pieces = [stream.add(byte) for byte in "é!".encode()]
    assert pieces == ["", "é", "!"] and stream.finish() == ""
    # A character cut off at the end is shown as the decoder shows it.
    cut = TextStream(byte_decode)
    assert cut.add("€".encode()[0]) == ""
    assert cut.finish() == "\ufffd"
    # A decoder that rewrites earlier text (spacing before punctuation): what was written
    # stays, the rest follows.
    words = {1: "a", 2: " ,"}
    joined = TextStream(lambda ids: "".join(words[i] for i in ids).replace(" ,", ","))
    assert [joined.add(1), joined.add(2)] == ["a", ","]


def test_parse_ids() -> None:
    assert parse_ids("1,5,9", "--prompt") == [1, 5, 9]
    assert parse_ids(" 1  5\t9 ", "--prompt") == [1, 5, 9]
    assert parse_ids("1, 5 ,9,", "--prompt") == [1, 5, 9]
    with pytest.raises(RuntimeInputError, match=r"^why: --prompt takes token ids .*'1.5'$"):
        parse_ids("1.5", "--prompt", "why")
    with pytest.raises(RuntimeInputError, match=r"--prompt is empty"):
        parse_ids(",", "--prompt")
