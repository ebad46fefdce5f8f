"""Every `audiointerp` command line in the README's code blocks parses, and the analysis ones mean what they say."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from audiointerp.analysis.compare import Settings as CompareSettings
from audiointerp.analysis.concepts import Settings as ConceptSettings
from audiointerp.analysis.decode import Settings as DecodeSettings
from audiointerp.analysis.extraction import ExtractSettings
from audiointerp.analysis.manipulate import Settings as ManipulateSettings
from audiointerp.analysis.probe import Settings as ProbeSettings
from audiointerp.analysis.rsa import Settings as RSASettings
from audiointerp.cli import ANALYSES, analysis_module, build_parser, settings_from_args

README = Path(__file__).resolve().parents[1] / "README.md"
PLACEHOLDER = re.compile(r"<[\w-]+>")  # <id>, <run_id>
SEPARATORS = {";", "&&", "||", "|"}


def shell_blocks(text: str) -> list[str]:
    """The text of every fenced shell code block (```bash, ```sh, ```shell, ```console)."""
    return re.findall(r"^```(?:bash|sh|shell|console)[ \t]*\n(.*?)^```", text, flags=re.M | re.S)


def audiointerp_arguments(words: list[str]) -> list[str] | None:
    """The arguments of `audiointerp` in one shell command (also `python -m audiointerp`, `accelerate launch ... -m
    audiointerp`, `torchrun ... -m audiointerp`); None when the command runs something else."""
    if words and Path(words[0]).name == "audiointerp":
        return words[1:]
    for k in range(len(words) - 1):
        if words[k] == "-m" and words[k + 1] == "audiointerp" and Path(words[0]).name in (
                "python", "python3", "accelerate", "torchrun"):
            return words[k + 2:]
    return None


def readme_commands(text: str) -> list[list[str]]:
    """The argument lists of every `audiointerp` command in the README's shell blocks: backslash continuations
    joined, comments dropped, `;`/`&&` chains split, placeholders such as <id> replaced by RUN_ID, and a `...`
    standing for the arguments of the latest command that begins the same way (as it does for `extract ...`)."""
    commands: list[list[str]] = []
    whole: list[list[str]] = []  # the commands written out in full, for the `...` of later ones
    for block in shell_blocks(text):
        for line in PLACEHOLDER.sub("RUN_ID", block.replace("\\\n", " ")).splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split, lexer.commenters = True, "#"
            chain: list[list[str]] = [[]]
            for word in lexer:
                if word in SEPARATORS:
                    chain.append([])
                else:
                    chain[-1].append(word)
            for command in chain:
                arguments = audiointerp_arguments(command)
                if arguments is None:
                    continue
                if "..." not in arguments:
                    whole.append(arguments)
                else:
                    at = arguments.index("...")
                    earlier = next((c for c in reversed(whole) if c[:at] == arguments[:at]), None)
                    if earlier is not None:
                        arguments = [*arguments[:at], *earlier[at:], *arguments[at + 1:]]
                commands.append(arguments)
    return commands


COMMANDS = readme_commands(README.read_text(encoding="utf-8"))

# What each analysis line of the README means: its inputs and its settings.
MEANINGS = {
    "analyze decode stores/yamnet --factor material --factor action":
        ({"store": Path("stores/yamnet")}, DecodeSettings(factors=["material", "action"])),
    "analyze manipulate runs/flow/RUN_ID/export stores/yamnet --factor material --factor action":
        ({"flow_export": Path("runs/flow/RUN_ID/export"), "store": Path("stores/yamnet")},
         ManipulateSettings(factors=["material", "action"])),
    "analyze rsa stores/yamnet stores/cnn --target factor:material --target responses:judgements.csv:kl --average "
    "--spectrogram --bootstrap 1000":
        ({"stores": [Path("stores/yamnet"), Path("stores/cnn")]},
         RSASettings(targets=["factor:material", "responses:judgements.csv:kl"], average=True, spectrogram=True,
                     bootstrap=1000)),
    "analyze probe stores/yamnet --factor material --train-where action in tapping,rubbing --test-where action in "
    "whirling,destructing":
        ({"store": Path("stores/yamnet")},
         ProbeSettings("material", train_where="action in tapping,rubbing", test_where="action in whirling,destructing")),
    "analyze concepts stores/semdnn --layer output --vectors glove-6b-50d --factor material":
        ({"store": Path("stores/semdnn")}, ConceptSettings(layer="output", vectors="glove-6b-50d", factor="material")),
    "analyze compare runs/esc50_mn10 runs/esc50_dymn10 --metric valid/accuracy":
        ({"runs": [Path("runs/esc50_mn10"), Path("runs/esc50_dymn10")]}, CompareSettings(metrics=["valid/accuracy"])),
}
EXTRACTS = {
    "extract --model yamnet --checkpoint weights:yamnet --data data/impacts/manifest.csv --layers 1,5,9,14 "
    "--out stores/yamnet --pooling mean --dtype float16":
        ExtractSettings(model="yamnet", checkpoint="weights:yamnet", data="data/impacts/manifest.csv",
                        layers=["1", "5", "9", "14"], pooling="mean", dtype="float16"),
    "extract --model runs/classifier/RUN_ID/export --data /data/ESC-50-master --layers block4,embedding --out stores/cnn":
        ExtractSettings(model="runs/classifier/RUN_ID/export", data="/data/ESC-50-master", layers=["block4", "embedding"]),
}


def test_the_readme_holds_the_commands_this_test_knows() -> None:
    assert len(COMMANDS) >= 30
    written = {" ".join(c) for c in COMMANDS}
    assert set(MEANINGS) <= written and set(EXTRACTS) <= written  # every meaning below is checked on a README line
    assert {c[1] for c in COMMANDS if c[0] == "analyze"} == set(ANALYSES)  # every analysis has a README line
    # `accelerate launch ... -m audiointerp extract ...` stands for the extract line above it
    assert sum(1 for c in COMMANDS if " ".join(c) in EXTRACTS) == 3


@pytest.mark.parametrize("arguments", COMMANDS, ids=[" ".join(c)[:80] for c in COMMANDS])
def test_every_readme_command_line_parses(arguments: list[str]) -> None:
    args = build_parser().parse_args(arguments)  # a bad line exits (SystemExit), failing the test
    assert args.command == arguments[0] and callable(args.func)
    if args.command == "train":
        assert all("=" in item or item == "..." for item in args.overrides), args.overrides
    if args.command == "evaluate" and "--data" in arguments:
        assert args.data == [arguments[k + 1] for k, word in enumerate(arguments) if word == "--data"]


@pytest.mark.parametrize("line", list(MEANINGS))
def test_analysis_lines_mean_what_they_say(line: str) -> None:
    inputs, expected = MEANINGS[line]
    args = build_parser().parse_args(_words(line))
    module = analysis_module(args.analysis)
    assert {name: getattr(args, name) for name in inputs} == inputs
    assert settings_from_args(module.Settings, args) == expected
    assert args.out is None and args.tracking == "wandb" and not args.quiet


@pytest.mark.parametrize("line", list(EXTRACTS))
def test_extract_lines_mean_what_they_say(line: str) -> None:
    args = build_parser().parse_args(_words(line))
    assert settings_from_args(ExtractSettings, args) == EXTRACTS[line]
    assert args.out == Path(_words(line)[_words(line).index("--out") + 1]) and args.batch_size == 16


def _words(line: str) -> list[str]:
    """The README command `line` (as joined above) back as its argument list."""
    return next(c for c in COMMANDS if " ".join(c) == line)


def test_the_options_the_readme_names_for_manipulate() -> None:
    """'Options: `--pair material=wood,metal`, `--repeats`, `--valley-width`, `--typical-radius`, `--output
    log_sigmoid`', and --pair repeated builds the mapping factor -> pairs."""
    base = _words("analyze manipulate runs/flow/RUN_ID/export stores/yamnet --factor material --factor action")
    args = build_parser().parse_args([*base, "--pair", "material=wood,metal", "--pair", "material=glass,wood",
                                      "--pair", "action=tapping,rubbing", "--repeats", "4", "--valley-width", "0.5",
                                      "--typical-radius", "0.4", "--output", "log_sigmoid"])
    settings = settings_from_args(ManipulateSettings, args)
    assert settings == ManipulateSettings(factors=["material", "action"], repeats=4, valley_width=0.5, typical_radius=0.4,
                                          output="log_sigmoid",
                                          pairs={"material": [("wood", "metal"), ("glass", "wood")],
                                                 "action": [("tapping", "rubbing")]})
    with pytest.raises(ValueError, match="write FACTOR=P,Q"):
        settings_from_args(ManipulateSettings, build_parser().parse_args([*base, "--pair", "material=wood"]))


def test_lists_and_defaults_of_the_other_analyses() -> None:
    """--l1 takes a list, --layers a comma-separated one, and options not given keep the Settings' defaults."""
    args = build_parser().parse_args(["analyze", "concepts", "s", "--layer", "output", "--l1", "0", "0.05"])
    assert settings_from_args(ConceptSettings, args) == ConceptSettings(layer="output", l1s=[0.0, 0.05])
    args = build_parser().parse_args(["analyze", "decode", "s", "--factor", "material", "--layers", "a, b,", "--instances", "9"])
    assert settings_from_args(DecodeSettings, args) == DecodeSettings(factors=["material"], layers=["a", "b"], instances=9)
    args = build_parser().parse_args(["analyze", "rsa", "s", "--target", "factor:material"])
    assert settings_from_args(RSASettings, args) == RSASettings(targets=["factor:material"])
    for missing in (["analyze", "rsa", "s"], ["analyze", "decode", "s"], ["analyze", "probe", "s"]):
        with pytest.raises(SystemExit):  # --target, --factor are required
            build_parser().parse_args(missing)
