"""Tests for ollamalike.names."""

from pathlib import PurePosixPath

import pytest

from ollamalike.errors import BadRequest
from ollamalike.names import Name


@pytest.mark.parametrize(
    "text, parts, shown",
    [
        ("llama3.2", ("registry.ollama.ai", "library", "llama3.2", "latest"), "llama3.2:latest"),
        ("llama3.2:1b", ("registry.ollama.ai", "library", "llama3.2", "1b"), "llama3.2:1b"),
        ("user/model:tag", ("registry.ollama.ai", "user", "model", "tag"), "user/model:tag"),
        ("hf.co/user/repo:Q4_K_M", ("hf.co", "user", "repo", "Q4_K_M"), "hf.co/user/repo:Q4_K_M"),
        ("localhost:5000/ns/m", ("localhost:5000", "ns", "m", "latest"), "localhost:5000/ns/m:latest"),
        ("localhost:5000/ns/m:v1", ("localhost:5000", "ns", "m", "v1"), "localhost:5000/ns/m:v1"),
        ("registry.ollama.ai/library/qwen2.5:0.5b", ("registry.ollama.ai", "library", "qwen2.5", "0.5b"), "qwen2.5:0.5b"),
        ("REGISTRY.ollama.ai/Library/Qwen:X", ("REGISTRY.ollama.ai", "Library", "Qwen", "X"), "Qwen:X"),
        ("https://example.com/a/b:c", ("example.com", "a", "b", "c"), "example.com/a/b:c"),
        ("http://example.com/a/b", ("example.com", "a", "b", "latest"), "example.com/a/b:latest"),
        ("example.com/library/b", ("example.com", "library", "b", "latest"), "example.com/library/b:latest"),
        ("_x/_y:_z", ("registry.ollama.ai", "_x", "_y", "_z"), "_x/_y:_z"),
    ],
)
def test_parse_and_display(text, parts, shown):
    name = Name.parse(text)
    assert name.parts() == parts
    assert name.display() == shown
    assert str(name) == shown
    assert name.digest is None
    # The display form parses back to the same name (up to case of defaults).
    assert Name.parse(shown).equal_fold(name)


def test_fields_and_long_form():
    name = Name.parse("gemma3:270m")
    assert (name.host, name.namespace, name.model, name.tag) == (
        "registry.ollama.ai", "library", "gemma3", "270m",
    )
    assert name.display_long() == "registry.ollama.ai/library/gemma3:270m"


def test_digest_suffix_is_kept_apart():
    hexd = "AB" * 32
    name = Name.parse(f"llama3:8b@sha256:{hexd}")
    assert name.parts() == ("registry.ollama.ai", "library", "llama3", "8b")
    assert name.digest == "sha256:" + "ab" * 32
    assert name.display() == "llama3:8b"
    assert Name.parse(f"llama3@sha256-{hexd}").tag == "latest"
    for bad in ("llama3@sha256:abc", "llama3@md5:" + "a" * 64, "llama3@", "@sha256:" + "a" * 64):
        with pytest.raises(BadRequest):
            Name.parse(bad)


def test_manifest_relpath():
    assert Name.parse("llama3.2").manifest_relpath() == PurePosixPath(
        "registry.ollama.ai/library/llama3.2/latest"
    )
    assert str(Name.parse("localhost:5000/ns/m:v1").manifest_relpath()) == "localhost:5000/ns/m/v1"


def test_length_limits():
    assert Name.parse("m" * 80).model == "m" * 80
    assert Name.parse("m:" + "t" * 80).tag == "t" * 80
    assert Name.parse("n" * 80 + "/m").namespace == "n" * 80
    assert Name.parse("h" * 350 + "/n/m").host == "h" * 350
    for bad in ("m" * 81, "m:" + "t" * 81, "n" * 81 + "/m", "h" * 351 + "/n/m"):
        with pytest.raises(BadRequest, match="^invalid model name$"):
            Name.parse(bad)


HOSTILE = [
    "", "../../etc/passwd", "a/../../b", "/abs", "/", "//", "a\\b", "..\\..\\x", ".hidden",
    "model:..", "model:.x", "..", ".", "a/b/c/d", "a/b/c/d/e:f", "a//b", "a/", "model:",
    ":tag", "a b", "a\tb", "a\nb", "a\x00b", "ns.dots/m", "h/n/m/../x", "x/..:tag",
    "host..name/n/m", "a..b", "m:a..b", "model:tag:extra", "ä", "-dash", "m:-t",
    "https://", "http:///m", "file:///etc/passwd", "C:\\Windows\\x", "~/x",
    "m@", "m#frag", "a:1/b", "m?q=1", "%2e%2e/x",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_names_are_rejected(text):
    with pytest.raises(BadRequest) as info:
        Name.parse(text)
    assert info.value.message == "invalid model name"
    assert info.value.status == 400


@pytest.mark.parametrize("text", ["a:1/n/b", "localhost:99/n/m:t", "x.y_z-1/a_b-c/d.e-f_g:h.i-j_k"])
def test_accepted_names_never_escape(text):
    name = Name.parse(text)
    rel = name.manifest_relpath()
    assert not rel.is_absolute()
    assert len(rel.parts) == 4
    assert all(p not in ("", ".", "..") and not p.startswith(".") for p in rel.parts)
    assert "\\" not in str(rel)


def test_non_string_rejected():
    for bad in (None, 3, b"llama"):
        with pytest.raises(BadRequest):
            Name.parse(bad)


def test_direct_construction_is_validated():
    assert Name("h", "n", "m", "t").display() == "h/n/m:t"
    with pytest.raises(BadRequest):
        Name("h", "n", "../m", "t")
    with pytest.raises(BadRequest):
        Name("registry.ollama.ai", "library", "m", "")


def test_frozen_and_hashable():
    a, b = Name.parse("llama3"), Name.parse("registry.ollama.ai/library/llama3:latest")
    assert a == b and hash(a) == hash(b)
    with pytest.raises(AttributeError):
        a.model = "x"  # type: ignore[misc]


def test_equal_fold():
    a, b = Name.parse("Llama3:Latest"), Name.parse("llama3")
    assert a != b
    assert a.equal_fold(b)
    assert a.fold_key() == ("registry.ollama.ai", "library", "llama3", "latest")
