"""Exact-output tests of `run`'s flags, `show -v`, `create -q` and the REPL's commands, against a
scripted daemon (tests/fakedaemon.py): what the CLI prints and what it sends."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import sys

import pytest

from ollamalike.cli.app import main
from ollamalike.cli.chat import RunOptions
from ollamalike.cli.repl import History, Repl
from tests.fakedaemon import FakeDaemon, model_info


@pytest.fixture
def fake(monkeypatch, tmp_path):
    d = FakeDaemon()
    monkeypatch.setenv("OLLAMALIKE_HOST", f"127.0.0.1:{d.port}")
    monkeypatch.setenv("OLLAMALIKE_NOAUTOSTART", "1")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("OLLAMALIKE_NOHISTORY", raising=False)
    monkeypatch.delenv("COLUMNS", raising=False)
    yield d
    d.stop()


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run the CLI in-process as `ollamalike *args` with `stdin` piped; (exit code, stdout, stderr)."""
    def go(*args: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        with pytest.raises(SystemExit) as exit_:
            main(list(args))
        out = capsys.readouterr()
        return exit_.value.code or 0, out.out, out.err
    return go


THINKING = [{"thinking": "Let me"}, {"thinking": " think."}, {"content": "Hi"}, {"content": " you."}]


def test_one_shot_shows_thinking_then_the_answer(fake, cli):
    fake.models["smol"]["capabilities"] = ["completion", "thinking"]
    fake.script = THINKING
    code, out, err = cli("run", "smol", "Why?")
    assert code == 0, err
    assert out == "Thinking...\nLet me think.\n...done thinking.\n\nHi you.\n\n"
    body = fake.bodies("generate")[-1]
    assert body["think"] is True and body["prompt"] == "Why?"  # a thinking model thinks unless told not to


def test_hidethinking_and_think_values(fake, cli):
    fake.models["smol"]["capabilities"] = ["completion", "thinking"]
    fake.script = THINKING
    assert cli("run", "smol", "--hidethinking", "Why?")[1] == "Hi you.\n\n"
    cli("run", "smol", "--think=false", "Why?")
    assert fake.bodies("generate")[-1]["think"] is False
    cli("run", "smol", "--think=low", "Why?")
    assert fake.bodies("generate")[-1]["think"] == "low"
    cli("run", "smol", "--think", "why", "not?")  # bare --think is true; the next word stays the prompt
    assert fake.bodies("generate")[-1]["think"] is True and fake.bodies("generate")[-1]["prompt"] == "why not?"
    code, _, err = cli("run", "smol", "--think=lots", "Why?")
    assert code == 1 and err == 'Error: invalid value for --think: "lots" (must be true, false, high, medium, low, or max)\n'


def test_no_think_field_for_a_model_that_cannot_think(fake, cli):
    cli("run", "smol", "Hi")
    assert "think" not in fake.bodies("generate")[-1]


def test_format_json_schema_file_and_inline(fake, cli, tmp_path):
    cli("run", "smol", "--format", "json", "Hi")
    assert fake.bodies("generate")[-1]["format"] == "json"
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    cli("run", "smol", "--format", str(tmp_path / "schema.json"), "Hi")
    assert fake.bodies("generate")[-1]["format"] == schema
    cli("run", "smol", "--format", json.dumps(schema), "Hi")
    assert fake.bodies("generate")[-1]["format"] == schema
    code, _, err = cli("run", "smol", "--format", "xml", "Hi")
    assert code == 1 and err == "Error: invalid format 'xml': use 'json', a JSON schema, or a file holding one\n"


def test_keepalive_and_verbose_stats(fake, cli):
    code, out, err = cli("run", "smol", "--keepalive", "1h", "--verbose", "Hi")
    assert code == 0 and out == "Hello there.\n\n"
    assert fake.bodies("generate")[-1]["keep_alive"] == "1h"
    assert err == ("total duration:       1.5s\n"
                   "load duration:        2ms\n"
                   "prompt eval count:    5 token(s)\n"
                   "prompt eval duration: 250ms\n"
                   "prompt eval rate:     20.00 tokens/s\n"
                   "eval count:           4 token(s)\n"
                   "eval duration:        500ms\n"
                   "eval rate:            8.00 tokens/s\n")
    code, _, err = cli("run", "smol", "--keepalive", "soon", "Hi")
    assert code == 1 and err == "Error: invalid duration 'soon'\n"


def test_piped_stdin_is_prepended_and_output_never_wrapped(fake, cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "12")
    fake.script = [{"content": "a very long answer that would wrap on a terminal"}]
    code, out, _ = cli("run", "smol", "Summarise:", stdin="some text")
    assert fake.bodies("generate")[-1]["prompt"] == "some text Summarise:"
    assert out == "a very long answer that would wrap on a terminal\n\n"


def test_embedding_model_prints_the_vector(fake, cli):
    fake.models["smol"]["capabilities"] = ["embedding"]
    code, out, _ = cli("run", "smol", "hello world")
    assert code == 0 and out == "[0.1,-0.25,3e-7,1]\n"
    assert fake.bodies("embed")[-1] == {"model": "smol", "input": "hello world"}
    code, out, _ = cli("run", "smol", "--dimensions", "2", "--truncate=false", "--keepalive", "1m", "hi")
    assert out == "[0.1,-0.25]\n"
    assert fake.bodies("embed")[-1] == {"model": "smol", "input": "hi", "dimensions": 2, "truncate": False,
                                        "keep_alive": "1m"}
    code, _, err = cli("run", "smol")
    assert code == 1 and err == 'Error: embedding models require input text. Usage: ollamalike run smol "your text here"\n'


def test_dimensions_on_a_completion_model_is_refused(fake, cli):
    code, _, err = cli("run", "smol", "--dimensions", "2", "hi")
    assert code == 1 and "--dimensions and --truncate are for embedding models" in err
    assert fake.bodies("generate") == []


def test_insecure_reaches_the_pull_and_says_it_changes_nothing(fake, cli):
    code, out, err = cli("run", "newmodel", "--insecure", "Hi")
    assert code == 0 and out == "Hello there.\n\n"
    assert fake.bodies("pull")[-1] == {"model": "newmodel", "insecure": True, "stream": True}
    assert "note: --insecure changes nothing here" in err
    code, _, err = cli("pull", "other", "--insecure")
    assert code == 0 and "note: --insecure changes nothing here" in err
    cli("run", "smol", "--insecure", "Hi")  # no pull, no note
    assert len(fake.bodies("pull")) == 2


def test_show_verbose_metadata_tensors_projector(fake, cli):
    fake.models["smol"] = model_info(
        model_info={"general.architecture": "llama", "general.parameter_count": 134515008,
                    "llama.context_length": 8192, "llama.embedding_length": 576, "llama.rope.freq_base": 100000.0,
                    "tokenizer.ggml.tokens": ["<|endoftext|>", "a", "b"], "tokenizer.ggml.add_bos_token": False},
        tensors=[{"name": "token_embd.weight", "type": "Q8_0", "shape": [576, 49152]},
                 {"name": "output_norm.weight", "type": "F32", "shape": [576]}],
        projector_info={"general.architecture": "clip", "general.parameter_count": 400000000,
                        "clip.vision.embedding_length": 1024, "clip.vision.projection_dim": 768},
        license="MIT License\n\nCopyright\nthird line", system="be brief")
    code, out, _ = cli("show", "smol", "-v")
    assert code == 0
    assert fake.bodies("show")[-1] == {"model": "smol", "verbose": True}
    assert out == """\
  Model
    architecture        llama
    parameters          134.52M
    context length      8192
    embedding length    576
    quantization        Q4_1

  Capabilities
    completion

  Projector
    architecture        clip
    parameters          400M
    embedding length    1024
    dimensions          768

  Parameters
    temperature    0

  Metadata
    general.architecture            llama
    general.parameter_count         1.34515008e+08
    llama.context_length            8192
    llama.embedding_length          576
    llama.rope.freq_base            100000
    tokenizer.ggml.add_bos_token    false
    tokenizer.ggml.tokens           [<|endoftext|> ...+2 more]

  Tensors
    token_embd.weight     Q8_0    [576 49152]
    output_norm.weight    F32     [576]

  System
    be brief

  License
    MIT License
    Copyright
    ...

"""
    _, plain, _ = cli("show", "smol")
    assert "Metadata" not in plain and "Tensors" not in plain and "Projector" in plain
    assert fake.bodies("show")[-1] == {"model": "smol"}


def test_create_quantize_is_sent_and_never_claimed(fake, cli, tmp_path):
    mf = tmp_path / "Modelfile"
    mf.write_text("FROM smol\n")
    code, _, err = cli("create", "q", "-f", str(mf), "-q", "q4_K_M")
    assert fake.bodies("create")[-1] == {"model": "q", "from": "smol", "quantize": "q4_K_M", "stream": True}
    assert code == 1 and err.endswith("Error: model 'q' was created but not quantized to q4_K_M: its weights are "
                                      "Q4_1 (this daemon ignored the quantize request)\n")
    fake.create_level = "Q4_K_M"  # a daemon that quantizes
    code, _, err = cli("create", "q", "--file", str(mf), "--quantize", "q4_K_M")
    assert code == 0 and err == "writing manifest\nsuccess\n"


def test_create_adapter_that_is_no_file_is_an_error_not_ignored(fake, cli, tmp_path):
    mf = tmp_path / "Modelfile"
    mf.write_text("FROM smol\nADAPTER my-lora\nREQUIRES 0.9.1\n")
    creates = len(fake.bodies("create"))
    code, _, err = cli("create", "tuned", "-f", str(mf))
    assert code == 1 and err == ("Error: adapter 'my-lora' not found: ADAPTER takes the path of a LoRA adapter "
                                 "GGUF\n")
    assert len(fake.bodies("create")) == creates
    mf.write_text("FROM smol\nREQUIRES 0.9.1\n")
    assert cli("create", "tuned", "-f", str(mf))[0] == 0
    assert fake.bodies("create")[-1] == {"model": "tuned", "from": "smol", "requires": "0.9.1", "stream": True}


def test_stop_unloads_by_keep_alive_zero(fake, cli):
    assert cli("stop", "smol") == (0, "", "")
    assert fake.bodies("generate")[-1] == {"model": "smol", "keep_alive": 0, "stream": True}
    assert cli("stop", "nope") == (1, "", 'Error: couldn\'t find model "nope" to stop\n')


def test_start_is_serve(cli):
    code, out, _ = cli("start", "--help")
    assert code == 0 and "OLLAMALIKE_NOHISTORY" in out and "Start the ollamalike daemon" in out


# --- the REPL -------------------------------------------------------------------------------------
def script(*lines: str):
    it = iter(lines)

    def read(prompt: str) -> str:
        try:
            return next(it)
        except StopIteration:
            raise EOFError from None
    return read


def repl(fake, *lines: str, history: History | None = None, terminal: bool = False, **opts) -> Repl:
    r = Repl(RunOptions(model="smol", **opts), read=script(*lines), history=history, terminal=terminal)
    r.run()
    return r


def test_repl_set_format_think_and_wordwrap(fake, capsys):
    fake.models["smol"]["capabilities"] = ["completion", "thinking"]
    repl(fake, "/set format json", "one", "/set noformat", "/set think low", "two", "/set nothink", "three",
         "/set format xml", "/set nowordwrap", "/set wordwrap", "/set bogus", "/bye")
    out, err = capsys.readouterr()
    chats = fake.bodies("chat")
    assert chats[0]["format"] == "json" and chats[0]["think"] is True  # inferred for a thinking model
    assert "format" not in chats[1] and chats[1]["think"] == "low"
    assert chats[2]["think"] is False
    assert [m["role"] for m in chats[2]["messages"]] == ["user", "assistant"] * 2 + ["user"]
    assert out == ("Set format to 'json' mode.\n"
                   "Hello there.\n\n"
                   "Disabled format.\n"
                   "Set 'think' mode to 'low'.\n"
                   "Hello there.\n\n"
                   "Set 'nothink' mode.\n"
                   "Hello there.\n\n"
                   "Invalid or missing format. For 'json' mode use '/set format json'\n"
                   "Set 'nowordwrap' mode.\n"
                   "Set 'wordwrap' mode.\n"
                   "Unknown command '/set bogus'. Type /? for help\n\n")
    assert "warning" not in err


def test_repl_think_on_a_model_that_cannot(fake, capsys):
    repl(fake, "/set think")
    out, err = capsys.readouterr()
    assert "Set 'think' mode." in out and err == 'warning: model "smol" does not support thinking output\n'


def test_repl_help_texts(fake, capsys):
    repl(fake, "/?", "/? shortcuts", "/? set", "/set")
    err = capsys.readouterr().err
    assert "  /? shortcuts    Help for keyboard shortcuts\n" in err
    assert "Available keyboard shortcuts:\n  Ctrl + a            Move to the beginning of the line (Home)\n" in err
    assert err.count("  /set nohistory         Disable history\n") == 2
    assert "  /set think             Enable thinking\n" in err


def test_repl_thinking_is_dimmed_on_a_terminal(fake, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    fake.models["smol"]["capabilities"] = ["completion", "thinking"]
    fake.script = THINKING
    repl(fake, "Why?", terminal=True)
    out = capsys.readouterr().out
    grey, bold, reset = "\x1b[38;5;245m", "\x1b[1m", "\x1b[0m"
    assert out == (f"{grey}{bold}Thinking...\n{reset}{grey}Let me think.\n{grey}{bold}...done thinking.\n\n{reset}"
                   "Hi you.\n\n\n")
    repl(fake, "Why?", terminal=True, hide_thinking=True)
    assert capsys.readouterr().out == "Hi you.\n\n\n"


def test_repl_wraps_at_the_terminal_width(fake, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "20")
    words = "the quick brown fox jumps over the lazy dog again and again".split()
    fake.script = [{"content": ("" if i == 0 else " ") + w} for i, w in enumerate(words)]
    repl(fake, "go", terminal=True)
    wrapped = capsys.readouterr().out
    lines = wrapped.rstrip("\n").split("\n")
    assert lines == ["the quick brown fox", "jumps over the lazy", "dog again and again"]
    repl(fake, "/set nowordwrap", "go", terminal=True)
    assert " ".join(words) in capsys.readouterr().out
    fake.script = [{"content": "whatever you're going through"}, {"content": ". I"}]  # a word cut by the stream
    monkeypatch.setenv("COLUMNS", "30")
    repl(fake, "go", terminal=True)
    assert capsys.readouterr().out == "whatever you're going \nthrough. I\n\n\n"


def test_repl_history_file_and_nohistory(fake, tmp_path, capsys):
    path = tmp_path / "history"
    repl(fake, "first question", "/set nohistory", "secret", "/set history", "/bye",
         history=History(path, enabled=True))
    # as Ollama's readline: a line is kept when history is on as it is typed
    assert path.read_text() == "first question\n/set nohistory\n/bye\n"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    h = History(path, enabled=False)  # OLLAMALIKE_NOHISTORY: what is there stays, nothing is added
    assert h.lines[0] == "first question"
    repl(fake, "another", history=h)
    assert path.read_text() == "first question\n/set nohistory\n/bye\n"


def test_history_keeps_the_last_hundred(tmp_path):
    h = History(tmp_path / "h", enabled=True)
    for i in range(150):
        h.add(f"line {i}")
    assert (tmp_path / "h").read_text().splitlines() == [f"line {i}" for i in range(50, 150)]


def test_default_history_honours_nohistory(fake, monkeypatch, tmp_path):
    from ollamalike.cli.repl import default_history
    h = default_history()
    assert h.enabled and h.path == tmp_path / "data" / "ollamalike" / "history"
    monkeypatch.setenv("OLLAMALIKE_NOHISTORY", "1")
    assert not default_history().enabled


def test_repl_load_shows_the_saved_session(fake, capsys):
    saved = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."}]
    fake.models["session"] = model_info(messages=saved)
    r = repl(fake, "hi", "/load missing", "/load session", "more")
    out = capsys.readouterr().out
    assert out == ("Hello there.\n\n"
                   "Loading model 'missing'\nCouldn't find model 'missing'\n"
                   "Loading model 'session'\n>>> What is 2+2?\n4.\n\n"
                   "Hello there.\n\n\n")
    # the daemon prepends the model's own messages; the CLI sends only this session's
    assert fake.bodies("chat")[-1]["messages"] == [{"role": "user", "content": "more"}]
    assert r.opts.model == "session"


def test_repl_save_keeps_loaded_and_new_messages(fake, capsys):
    saved = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    fake.models["session"] = model_info(messages=saved)
    repl(fake, "/load session", "/set system be brief", "/set parameter temperature 0", "c", "/save s2")
    body = fake.bodies("create")[-1]
    assert body["from"] == "session" and body["system"] == "be brief" and body["parameters"] == {"temperature": 0}
    assert body["messages"] == saved + [{"role": "system", "content": "be brief"}, {"role": "user", "content": "c"},
                                        {"role": "assistant", "content": "Hello there."}]
    assert "Created new model 's2'" in capsys.readouterr().out


def test_repl_show_and_set_parameter(fake, capsys):
    repl(fake, "/set parameter bogus 1", "/set parameter stop a b", "/show parameters", "/show template",
         "/show license", "/show nope")
    out = capsys.readouterr().out
    assert out == ("Couldn't set parameter: \"unknown parameter 'bogus'\"\n"
                   "Set parameter 'stop' to 'a, b'\n"
                   "Model defined parameters:\n  temperature                    0\n\n"
                   "User defined parameters:\n  stop                           [a b]\n\n"
                   "{{ .Prompt }}\n"
                   "No license was specified for this model.\n"
                   "Unknown command '/show nope'. Type /? for help\n\n")


def test_repl_refuses_an_embedding_model(fake):
    from ollamalike.errors import BadRequest
    fake.models["smol"]["capabilities"] = ["embedding"]
    with pytest.raises(BadRequest, match="embedding models require input text"):
        repl(fake, "hi")
    assert fake.bodies("generate") == [] and fake.bodies("chat") == []


def test_repl_verbose_prints_stats(fake, capsys):
    repl(fake, "/set verbose", "hi", "/set quiet", "hi")
    out, err = capsys.readouterr()
    assert out.startswith("Set 'verbose' mode.\nHello there.\n\nSet 'quiet' mode.\n")
    assert err.count("eval rate:            8.00 tokens/s\n") == 1


# --- the pieces -----------------------------------------------------------------------------------
def test_wordwrap_never_splits_a_word_however_it_is_streamed():
    from ollamalike.cli.display import WordWrap
    text = ("Streaming text arrives in pieces that cut words anywhere: supercalifragilistic words, short ones, "
            "and a newline\nin the middle; then more words until the end.")
    for size in (1, 2, 3, 7, 1000):
        buf = io.StringIO()
        w = WordWrap(buf, 24)
        for i in range(0, len(text), size):
            w.write(text[i:i + size])
            w.flush()
        w.finish()
        out = buf.getvalue()
        assert all(len(line) <= 23 for line in out.split("\n")), out
        assert out.split() == text.split()  # only spaces became line breaks
        assert re.sub(r"\s+", " ", out) == re.sub(r"\s+", " ", text)


def test_wordwrap_cuts_only_words_longer_than_a_line_and_counts_wide_characters():
    from ollamalike.cli.display import WordWrap
    buf = io.StringIO()
    w = WordWrap(buf, 11)
    w.write("ab " + "x" * 25 + " end")
    w.finish()
    assert [line.rstrip() for line in buf.getvalue().split("\n")] == ["ab", "x" * 10, "x" * 10, "xxxxx end"]
    buf = io.StringIO()
    w = WordWrap(buf, 9)
    w.write("日本語のテキスト")  # 2 cells each: 4 per line of 8
    w.finish()
    assert buf.getvalue().split("\n") == ["日本語の", "テキスト"]


def test_go_formats():
    from ollamalike.cli.display import go_duration, go_float32
    from ollamalike.cli.show import go_g
    assert [go_duration(n) for n in (0, 999, 1500, 1_234_567, 61_000_000_000, 3_600_000_000_005)] == \
        ["0s", "999ns", "1.5µs", "1.234567ms", "1m1s", "1h0m0.000000005s"]
    assert [go_float32(x) for x in (0.1, -0.0123456789, 1e-7, 1e-6, 0.3333333333, 100.0, 3e21)] == \
        ["0.1", "-0.012345679", "1e-7", "0.000001", "0.33333334", "100", "3e+21"]
    assert [go_g(x) for x in (576, 1_000_000, 1_234_567, 1e-5, 0.0001, 100000.0)] == \
        ["576", "1e+06", "1.234567e+06", "1e-05", "0.0001", "100000"]


def test_nohistory_is_a_setting():
    from ollamalike import config
    assert "OLLAMALIKE_NOHISTORY" in [env for env, _, _ in config.describe()]
    assert os.environ.get("OLLAMALIKE_NOHISTORY") is None or config.nohistory()


def test_repl_attaches_image_paths_for_a_vision_model(fake, capsys, tmp_path):
    pic = tmp_path / "cat pic.png"
    pic.write_bytes(b"\x89PNG fake")
    line = f"what is in {str(pic).replace(' ', chr(92) + ' ')}"
    fake.models["smol"]["capabilities"] = ["completion", "vision"]
    repl(fake, line, "and now?")
    chats = fake.bodies("chat")
    first = chats[0]["messages"][-1]
    assert first == {"role": "user", "content": "what is in", "images": [base64.b64encode(b"\x89PNG fake").decode()]}
    assert chats[1]["messages"][0] == first and "images" not in chats[1]["messages"][-1]  # kept in history
    assert f"Added image '{pic}'" in capsys.readouterr().err
    repl(fake, f"/load {pic.parent}/cat\\ pic.png", "describe")  # /load of an image: for the next message
    assert fake.bodies("chat")[-1]["messages"][-1]["images"] == first["images"]
    fake.models["smol"]["capabilities"] = ["completion"]
    repl(fake, line)
    assert fake.bodies("chat")[-1]["messages"][-1] == {"role": "user", "content": line}
