"""Tests for ollamalike.modelfile."""

import pytest

from ollamalike.errors import BadRequest
from ollamalike.modelfile import Modelfile, parse_modelfile

BAD_COMMAND = (
    'command must be one of "from", "license", "template", "system", "adapter", '
    '"parameter", "message", or "requires"'
)

FULL = '''# A Modelfile
FROM llama3.2:1b

  # indented comment
parameter temperature 0.6
PARAMETER stop "<|start_header_id|>"
PARAMETER stop <|eot_id|>
PARAMETER num_ctx 4096
Template """{{ if .System }}<|start_header_id|>system<|end_header_id|>

{{ .System }}<|eot_id|>{{ end }}# not a comment
"""
SYSTEM You are Mario from Super Mario Bros.
ADAPTER ./lora.gguf
MESSAGE user Is Toronto in Canada?
MESSAGE Assistant """yes"""
license """MIT
line two"""
LICENSE "Apache 2.0"
'''


def test_full_example():
    mf = parse_modelfile(FULL)
    assert mf == Modelfile(
        from_="llama3.2:1b",
        parameters=[("temperature", "0.6"), ("stop", "<|start_header_id|>"), ("stop", "<|eot_id|>"),
                    ("num_ctx", "4096")],
        template="{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n"
                 "{{ .System }}<|eot_id|>{{ end }}# not a comment\n",
        system="You are Mario from Super Mario Bros.",
        licenses=["MIT\nline two", "Apache 2.0"],
        messages=[{"role": "user", "content": "Is Toronto in Canada?"},
                  {"role": "assistant", "content": "yes"}],
        adapters=["./lora.gguf"],
    )


def test_minimal_and_defaults():
    mf = parse_modelfile("FROM ./model.gguf")
    assert mf.from_ == "./model.gguf"
    assert (mf.parameters, mf.template, mf.system, mf.licenses, mf.messages, mf.adapters) == (
        [], None, None, [], [], [],
    )


def test_quoting_forms():
    mf = parse_modelfile(
        'FROM "my model.gguf"\n'
        'SYSTEM """one line"""\n'
        'PARAMETER stop "  padded  "\n'
        'PARAMETER stop """multi\nline stop"""\n'
        'PARAMETER stop """"quoted""""\n'
        'TEMPLATE """\n'
        '  {{ .Prompt }}  \n'
        '"""   \n'
    )
    assert mf.from_ == "my model.gguf"
    assert mf.system == "one line"
    assert mf.parameters == [("stop", "  padded  "), ("stop", "multi\nline stop"), ("stop", '"quoted"')]
    assert mf.template == "\n  {{ .Prompt }}  \n"


def test_crlf_bom_last_system_wins_and_every_from_is_kept():
    # as Ollama's create: a second FROM is another file of the model (a vision projector)
    mf = parse_modelfile("\ufeffFROM a\r\nSYSTEM one\r\nSYSTEM two\r\nFROM b\r\n")
    assert (mf.from_, mf.more_from, mf.system) == ("a", ["b"], "two")
    assert parse_modelfile(mf.to_text()) == mf


def test_empty_quoted_values():
    mf = parse_modelfile('FROM x\nSYSTEM ""\nTEMPLATE """"""\n')
    assert (mf.system, mf.template) == ("", "")


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "no FROM line"),
        ("# only a comment\n\nSYSTEM hi\n", "no FROM line"),
        ("FROM x\nFOO bar\n", BAD_COMMAND),
        ("FROM x\nDRAFTS y\n", BAD_COMMAND),
        ("FROMx\n", BAD_COMMAND),
        ("FROM x\nPARAMETER temperature\n", "parameter 'temperature' is missing a value"),
        ("FROM x\nPARAMETER temperature   \n", "parameter 'temperature' is missing a value"),
        ("FROM x\nPARAMETER\n", "parameter is missing a name and a value"),
        ("FROM\n", "from is missing a value"),
        ("FROM x\nSYSTEM\n", "system is missing a value"),
        ("FROM x\nMESSAGE robot hi\n", 'message role must be one of "system", "user", or "assistant"'),
        ("FROM x\nMESSAGE user\n", "message 'user' is missing its content"),
        ('FROM x\nTEMPLATE """abc\nno end\n', 'unterminated """ in template'),
        ('FROM x\nPARAMETER stop """abc\n', "unterminated \"\"\" in parameter 'stop'"),
        ('FROM x\nSYSTEM "abc\n', 'unterminated " in system'),
        ('FROM x\nSYSTEM """a""" b\n', "unexpected text after closing quotes in system"),
    ],
)
def test_errors(text, message):
    with pytest.raises(BadRequest) as info:
        parse_modelfile(text)
    assert info.value.message == message
    assert info.value.status == 400


def test_instructions_are_case_insensitive():
    mf = parse_modelfile("from x\nsYsTeM hi\nmessage SYSTEM be nice\n")
    assert mf.system == "hi"
    assert mf.messages == [{"role": "system", "content": "be nice"}]


ROUND_TRIP = [
    FULL,
    "FROM x",
    'FROM "a b"\nPARAMETER stop ""\nPARAMETER stop " x"\nPARAMETER stop "\\"\nSYSTEM ""\n',
    'FROM x\nTEMPLATE """\n{{ .Prompt }}\n"""\nMESSAGE user """two\nlines"""\nMESSAGE assistant """"hi""""\n',
    'FROM x\nADAPTER a\nADAPTER "b c"\nLICENSE """\n"""\nPARAMETER seed 42\n',
]


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_round_trip(text):
    mf = parse_modelfile(text)
    rendered = mf.to_text()
    assert parse_modelfile(rendered) == mf
    assert parse_modelfile(rendered).to_text() == rendered


def test_to_text_exact():
    mf = Modelfile(
        from_="llama3.2",
        parameters=[("stop", "<|eot_id|>"), ("temperature", "0.6"), ("stop", " ")],
        template="{{ .Prompt }}",
        system="Be brief.",
        licenses=["MIT"],
        messages=[{"role": "user", "content": "hi"}],
        adapters=["/tmp/a.gguf"],
    )
    assert mf.to_text() == (
        "FROM llama3.2\n"
        "ADAPTER /tmp/a.gguf\n"
        'TEMPLATE """{{ .Prompt }}"""\n'
        'SYSTEM """Be brief."""\n'
        "PARAMETER stop <|eot_id|>\n"
        "PARAMETER temperature 0.6\n"
        'PARAMETER stop """ """\n'
        'LICENSE """MIT"""\n'
        "MESSAGE user hi\n"
    )


def test_to_text_rejects_unrepresentable_value():
    with pytest.raises(BadRequest, match='cannot contain """'):
        Modelfile(from_="x", system='a """ b').to_text()
