"""Ollama's Go template dialect: every construct, Ollama's data and per-turn rules, and bounds.

The cases are written here (expected outputs worked out from Go's and Ollama's rules); the
reference renderings in ../shared are checked by scripts/check_ollama_templates.py.
"""

from __future__ import annotations

import time
from datetime import date, timedelta

import pytest

from ollamalike.template import Budget, TemplateError, kind, render
from ollamalike.template.goexec import Executor
from ollamalike.template.gotemplate import parse
from ollamalike.template.ollama import FUNCS, GoTemplate, collate

USER = [{"role": "user", "content": "Hi there"}]
UAU = [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello!"},
       {"role": "user", "content": "Tell me a joke"}]
SUAU = [{"role": "system", "content": "Be brief."}] + UAU


def go(src: str, data_messages=USER, **kw) -> str:
    return GoTemplate(src).execute(data_messages, **kw)


def root(src: str, **data) -> str:
    """Execute plain Go text/template (no Ollama rules) with `data` as dot."""
    tree, defines = parse(src, set(FUNCS))
    return Executor(defines, FUNCS, Budget()).run(tree, data)


# --- language constructs ------------------------------------------------------------------
@pytest.mark.parametrize("src,data,want", [
    ("plain text", {}, "plain text"),
    ("{{ .A }}-{{ .B.C }}", {"A": "a", "B": {"C": "c"}}, "a-c"),
    ("x  {{- .A -}}  \n y", {"A": "a"}, "xay"),
    ("x {{- /* a comment */ -}} y", {}, "xy"),
    ("x{{/* a comment */}} y", {}, "x y"),
    ("{{ if .A }}yes{{ else }}no{{ end }}", {"A": ""}, "no"),
    ("{{ if .A }}a{{ else if .B }}b{{ else }}c{{ end }}", {"A": 0, "B": [1]}, "b"),
    ("{{ if .A }}a{{ else if .B }}b{{ else }}c{{ end }}", {"A": 0, "B": []}, "c"),
    ("{{ range .L }}[{{ . }}]{{ end }}", {"L": ["a", "b"]}, "[a][b]"),
    ("{{ range $i, $x := .L }}{{ $i }}={{ $x }};{{ end }}", {"L": ["a", "b"]}, "0=a;1=b;"),
    ("{{ range $x := .L }}{{ $x }}{{ end }}", {"L": ["a", "b"]}, "ab"),
    ("{{ range .L }}x{{ else }}empty{{ end }}", {"L": []}, "empty"),
    ("{{ range $k, $v := .M }}{{ $k }}:{{ $v }} {{ end }}", {"M": {"b": 2, "a": 1}}, "a:1 b:2 "),
    ("{{ range 3 }}{{ . }}{{ end }}", {}, "012"),
    ("{{ range .L }}{{ if eq . 2 }}{{ continue }}{{ end }}{{ if eq . 4 }}{{ break }}{{ end }}{{ . }}{{ end }}",
     {"L": [1, 2, 3, 4, 5]}, "13"),
    ("{{ with .A }}<{{ . }}>{{ else }}none{{ end }}", {"A": "v"}, "<v>"),
    ("{{ with .A }}<{{ . }}>{{ else with .B }}b={{ . }}{{ end }}", {"A": "", "B": "x"}, "b=x"),
    ("{{ range .L }}{{ $.Top }}{{ end }}", {"L": [1, 2], "Top": "t"}, "tt"),
    ("{{ $x := .A }}{{ $x }}{{ $x = \"changed\" }} {{ $x }}", {"A": "a"}, "a changed"),
    ("{{ $x := 1 }}{{ range .L }}{{ $x = . }}{{ end }}{{ $x }}", {"L": [5, 6]}, "6"),
    ("{{ .A | printf \"%s-%s\" \"pre\" }}", {"A": "a"}, "pre-a"),
    ("{{ .A | len | printf \"%d\" }}", {"A": "héllo"}, "6"),
    ("{{ (index .L 1).N }}", {"L": [{"N": "x"}, {"N": "y"}]}, "y"),
    ("{{ len (slice .L 1) }}", {"L": [1, 2, 3]}, "2"),
    ("{{ .Missing }}|{{ if .Missing }}t{{ else }}f{{ end }}", {}, "<no value>|f"),
    ("{{ \"a\\tb\\u00e9\" }}{{ `raw\\n` }}{{ 'x' }}", {}, "a\tbéraw\\n120"),
    ("{{ 1.5 }} {{ 1e6 }} {{ 0x1F }} {{ -3 }} {{ true }} {{ print nil }}", {}, "1.5 1e+06 31 -3 true <nil>"),
])
def test_constructs(src, data, want):
    assert root(src, **data) == want


@pytest.mark.parametrize("src,want", [
    ('{{ eq 1 1 }} {{ eq "a" "b" "a" }} {{ ne 1 2 }} {{ lt 1 2 }} {{ le 2 2 }} {{ gt 1 2 }} {{ ge "b" "a" }}',
     "true true true true true false true"),
    ("{{ and 1 0 2 }} {{ and 1 2 }} {{ or 0 \"\" \"z\" }} {{ or 0 false }} {{ not 0 }} {{ not \"x\" }}",
     "0 2 z false true false"),
    ("{{ and false (index .L 9) }} {{ or true (index .L 9) }}", "false true"),  # short-circuit
    ("{{ len .L }} {{ len \"abc\" }} {{ len .M }} {{ index .L 0 }} {{ index .M \"k\" }} {{ index \"abc\" 1 }}",
     "2 3 1 a v 98"),
    ("{{ slice \"abcdef\" 1 3 }} {{ slice .L 1 }} {{ slice .L }}", "bc [b] [a b]"),
    ('{{ print 1 2 "a" "b" 3 }}|{{ println "a" 1 }}|', "1 2ab3|a 1\n|"),
    ('{{ printf "%d|%5d|%-3d|%03d|%x|%X|%o|%b|%c" 42 42 7 7 255 255 8 5 65 }}', "42|   42|7  |007|ff|FF|10|101|A"),
    ('{{ printf "%s|%q|%v|%t|%.2f|%e|%g|%6.1f|%%" "s" "q\\"" .L true 3.14159 1234.5678 0.5 2.25 }}',
     's|"q\\""|[a b]|true|3.14|1.234568e+03|0.5|   2.2|%'),
    ('{{ printf "%d %s" 1 }}|{{ printf "%d" 1 2 }}|{{ printf "%s" 3 }}',
     "1 %!s(MISSING)|1%!(EXTRA int=2)|%!s(int=3)"),
    ('{{ printf "%q|%q|%T|%U|%*d|%s" "é\\n<" .L 1.5 97 4 7 nil }}', '"é\\n<"|["a" "b"]|float64|U+0061|   7|%!s(<nil>)'),
    ('{{ html "<a href=\'x\'>&\\"" }}|{{ js "it\'s <b>" }}|{{ urlquery "a b&c=d" }}',
     "&lt;a href=&#39;x&#39;&gt;&amp;&#34;|it\\'s \\u003Cb\\u003E|a+b%26c%3Dd"),
    ('{{ define "item" }}<{{ . }}>{{ end }}{{ range .L }}{{ template "item" . }}{{ end }}', "<a><b>"),
    ('{{ block "b" .L }}{{ len . }}{{ end }}', "2"),
    ("{{ json .L }} {{ json .M }} {{ json \"<&>\" }} {{ json 1.0 }} {{ json 0.000001 }} {{ json 1e21 }}",
     '["a","b"] {"k":"v"} "\\u003c\\u0026\\u003e" 1 0.000001 1e+21'),
])
def test_builtins(src, want):
    assert root(src, L=["a", "b"], M={"k": "v"}) == want


def test_date_functions():
    assert root("{{ currentDate }} {{ yesterdayDate }}") == \
        f"{date.today().isoformat()} {(date.today() - timedelta(days=1)).isoformat()}"


@pytest.mark.parametrize("src,message", [
    ("{{ .Prompt ", "unclosed action"),
    ("{{ if .A }}x", "unexpected EOF"),
    ("{{ end }}", "unexpected {{end}}"),
    ("{{ nosuchfunc .A }}", 'function "nosuchfunc" not defined'),
    ("{{ $undefined }}", "undefined variable"),
    ("{{ range .L }}{{ else if .A }}{{ end }}", "expected end"),
    ('{{define "x"}}{{template "x"}}{{end}}{{template "x"}}', "undefined template specified"),
    ("{{ \"unterminated }}", "unterminated quoted string"),
    ("{{ json$ }}", "bad character"),
    ("{{ .A\"x\" }}", "bad character"),
    ("{{ 1e400 }}", "illegal number syntax"),
    ("{{ break }}", "outside"),
    ("{{ range .L }}{{ else }}{{ continue }}{{ end }}", "outside"),
])
def test_parse_errors(src, message):
    with pytest.raises(TemplateError, match=message.replace("{", r"\{").replace("}", r"\}")):
        GoTemplate(src)


@pytest.mark.parametrize("src,message", [
    ("{{ lt 1 \"a\" }}", "incompatible types for comparison"),
    ("{{ index .L 5 }}", "index out of range"),
    ("{{ .A.B }}", "can't evaluate field B in type string"),
    ("{{ range .A }}{{ end }}", "range can't iterate over"),
    ("{{ .A 1 }}", "can't give argument|has arguments"),
    ("{{ nil }}", "nil is not a command"),
    ('{{ printf "%999999999d" 1 }}', "width or precision"),
    ('{{ index .M 1 }}', "should be string"),
])
def test_runtime_errors(src, message):
    with pytest.raises(TemplateError, match=message):
        root(src, A="s", L=[1], M={"k": "v"})


# --- Ollama's rules -----------------------------------------------------------------------
def test_vars_and_response_appended():
    assert GoTemplate("{{ .System }} {{ .Prompt }}").vars == ["prompt", "response", "system"]
    assert GoTemplate("{{ range .Messages }}{{ .Role }}{{ end }}").vars == ["messages", "role"]
    assert GoTemplate("{{ with .Tools }}{{ . }}{{ end }}").vars == ["response", "tools"]
    # no .Messages and no .Response: Ollama appends {{ .Response }}
    assert go("Q: {{ .Prompt }} A: ", UAU) == "Q: Hi there A: HelloQ: Tell me a joke A: ".replace("Hello", "Hello!")


def test_legacy_per_turn_rendering_cuts_after_response():
    tmpl = "{{ if .System }}<s>{{ .System }}</s>{{ end }}[U]{{ .Prompt }}[A]{{ .Response }}[END]\n"
    assert go(tmpl, SUAU) == "<s>Be brief.</s>[U]Hi there[A]Hello![END]\n[U]Tell me a joke[A]"
    # a final assistant message is continued, not closed
    assert go(tmpl, UAU + [{"role": "assistant", "content": "Why did"}]) == \
        "[U]Hi there[A]Hello![END]\n[U]Tell me a joke[A]Why did"


def test_collate_merges_same_roles_but_not_tools():
    system, msgs = collate([{"role": "system", "content": "a"}, {"role": "system", "content": "b"},
                            {"role": "user", "content": "1"}, {"role": "user", "content": "2"},
                            {"role": "tool", "content": "x"}, {"role": "tool", "content": "y"}])
    assert system == "a\n\nb"
    assert [(m["role"], m["content"]) for m in msgs] == [("system", "a\n\nb"), ("user", "1\n\n2"),
                                                          ("tool", "x"), ("tool", "y")]


def test_suffix_mode():
    tmpl = "{{- if .Suffix }}<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>{{- else }}{{ .Prompt }}{{- end }}"
    assert go(tmpl, [], prompt="def f(", suffix="return x") == "<PRE> def f( <SUF>return x <MID>"
    assert go(tmpl, USER) == "Hi there"


CHATML = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""
LLAMA3 = """{{- if .System }}<|start_header_id|>system<|end_header_id|>

{{ .System }}<|eot_id|>
{{- end }}
{{- range .Messages }}{{ if ne .Role "system" }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}<|eot_id|>
{{- end }}{{ end }}<|start_header_id|>assistant<|end_header_id|>

"""
GEMMA = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if or (eq .Role "user") (eq .Role "system") }}<start_of_turn>user
{{ .Content }}<end_of_turn>
{{ if $last }}<start_of_turn>model
{{ end }}
{{- else if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}{{ if not $last }}<end_of_turn>
{{ end }}
{{- end }}
{{- end }}"""
MISTRAL = """{{- range $i, $_ := .Messages }}
{{- if eq .Role "user" }}[INST] {{ if and $.System (eq (len (slice $.Messages $i)) 1) }}{{ $.System }}

{{ end }}{{ .Content }}[/INST]
{{- else if eq .Role "assistant" }} {{ .Content }}</s>
{{- end }}
{{- end }}"""

EXPECTED = {
    ("chatml", "user"): "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    ("chatml", "uau"): "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n"
                       "<|im_start|>user\nTell me a joke<|im_end|>\n<|im_start|>assistant\n",
    ("chatml", "suau"): "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n"
                        "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nTell me a joke<|im_end|>\n"
                        "<|im_start|>assistant\n",
    ("llama3", "user"): "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
                        "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ("llama3", "uau"): "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
                       "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
                       "<|start_header_id|>user<|end_header_id|>\n\nTell me a joke<|eot_id|>"
                       "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ("llama3", "suau"): "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                        "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
                        "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
                        "<|start_header_id|>user<|end_header_id|>\n\nTell me a joke<|eot_id|>"
                        "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ("gemma", "user"): "<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n",
    ("gemma", "uau"): "<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
                      "<start_of_turn>user\nTell me a joke<end_of_turn>\n<start_of_turn>model\n",
    ("gemma", "suau"): "<start_of_turn>user\nBe brief.<end_of_turn>\n<start_of_turn>user\nHi there<end_of_turn>\n"
                       "<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>user\nTell me a joke<end_of_turn>\n"
                       "<start_of_turn>model\n",
    ("mistral", "user"): "[INST] Hi there[/INST]",
    ("mistral", "uau"): "[INST] Hi there[/INST] Hello!</s>[INST] Tell me a joke[/INST]",
    ("mistral", "suau"): "[INST] Hi there[/INST] Hello!</s>[INST] Be brief.\n\nTell me a joke[/INST]",
}


@pytest.mark.parametrize("name,case", sorted(EXPECTED))
def test_representative_templates(name, case):
    src = {"chatml": CHATML, "llama3": LLAMA3, "gemma": GEMMA, "mistral": MISTRAL}[name]
    msgs = {"user": USER, "uau": UAU, "suau": SUAU}[case]
    assert render(src, msgs) == EXPECTED[(name, case)]


TOOLS_TEMPLATE = """{{- range $index, $_ := .Messages }}
{{- if eq .Role "user" }}
{{- if and (le (len (slice $.Messages $index)) 2) $.Tools }}[AVAILABLE_TOOLS] {{ json $.Tools }}[/AVAILABLE_TOOLS]
{{- end }}[INST] {{ .Content }}[/INST]
{{- else if eq .Role "assistant" }}
{{- if .Content }} {{ .Content }}</s>
{{- else if .ToolCalls }}[TOOL_CALLS] [
{{- range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ json .Function.Arguments }}}
{{- end }}]</s>
{{- end }}
{{- else if eq .Role "tool" }}[TOOL_RESULTS] {"content": {{ .Content }}}[/TOOL_RESULTS]
{{- end }}
{{- end }}"""
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the <current> weather",
    "parameters": {"type": "object", "required": ["city"], "properties": {
        "unit": {"type": "string", "enum": ["c", "f"], "default": "c"},
        "city": {"type": "string", "description": "City name"}}}}}


def test_tool_calling_template_renders_tools_and_calls():
    msgs = [{"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"unit": "c", "city": "Paris", "days": 2}}}]},
            {"role": "tool", "content": "18", "tool_name": "get_weather"},
            {"role": "user", "content": "And in Rome?"}]
    out = render(TOOLS_TEMPLATE, msgs, tools=[WEATHER])
    tools_json = ('[{"type":"function","function":{"name":"get_weather","description":"Get the \\u003ccurrent\\u003e '
                  'weather","parameters":{"type":"object","required":["city"],"properties":{"city":{"type":"string",'
                  '"description":"City name"},"unit":{"type":"string","enum":["c","f"]}}}}}]')
    assert out == ("[INST] Weather in Paris?[/INST]"
                   '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city":"Paris","days":2,"unit":"c"}}]</s>'
                   '[TOOL_RESULTS] {"content": 18}[/TOOL_RESULTS]'
                   f"[AVAILABLE_TOOLS] {tools_json}[/AVAILABLE_TOOLS][INST] And in Rome?[/INST]")


def test_tool_values_print_as_ollama_does():
    msgs = [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {"n": 1000000, "s": "x"}}}]}]
    src = ("{{ range .Messages }}{{ range .ToolCalls }}{{ .Function.Arguments }} "
           "{{ range $k, $v := .Function.Arguments }}{{ $k }}={{ $v }};{{ end }}{{ end }}{{ end }}"
           "{{ range .Tools }}|{{ .Function.Name }} {{ range $n, $p := .Function.Parameters.Properties }}"
           "{{ $n }}:{{ $p.Type }}:{{ toTypeScriptType $p }} {{ end }}{{ .Function.Parameters.Required }}{{ end }}"
           "|{{ .Tools }}")
    out = render(src, msgs, tools=[WEATHER])
    assert out.startswith('{"n":1000000,"s":"x"} n=1e+06;s=x;|get_weather city:string:string unit:string:string [city]|[{')


THINK = ("{{ range .Messages }}{{ .Content }}{{ end }}|think={{ .Think }} level={{ .ThinkLevel }} "
         "set={{ .IsThinkSet }}{{ if and .IsThinkSet (not .Think) }} /no_think{{ end }}")


@pytest.mark.parametrize("think,want", [
    (None, "think=false level= set=false"),
    (False, "think=false level= set=true /no_think"),
    (True, "think=true level=medium set=true"),
    ("high", "think=true level=high set=true"),
    ("low", "think=true level=low set=true"),
])
def test_thinking_values(think, want):
    assert render(THINK, USER, think=think) == "Hi there|" + want


def test_no_tools_is_a_nil_slice():
    src = "{{ range .Messages }}{{ end }}{{ .Tools }} {{ json .Tools }} {{ if .Tools }}y{{ else }}n{{ end }}"
    assert render(src, USER) == "null null n"
    assert render(src, USER, tools=[]) == "[] [] n"


def test_tool_call_arguments_given_as_json_text():
    msgs = [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": '{"b": 1, "a": "x"}'}}]}]
    assert render("{{ range .Messages }}{{ range .ToolCalls }}{{ .Function.Arguments }}{{ end }}{{ end }}", msgs) \
        == '{"a":"x","b":1}'


def test_thinking_and_tool_call_messages_reach_the_template():
    src = "{{ range .Messages }}{{ .Role }}:{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ .Content }};{{ end }}"
    assert render(src, [{"role": "assistant", "content": "4", "thinking": "2+2"}]) == "assistant:<think>2+2</think>4;"


# --- detection and bounds -----------------------------------------------------------------
@pytest.mark.parametrize("src,want", [
    ("{{ .Prompt }}", "go"), ("no actions at all", "go"), (CHATML, "go"),
    ("{% for m in messages %}{{ m.content }}{% endfor %}", "jinja"),
    ("{{ bos_token }}{{ messages[0]['content'] }}", "jinja"),
    ("{# comment #}{{ messages }}", "jinja"),
])
def test_kind(src, want):
    assert kind(src) == want


def test_unparseable_go_template_reports_go_error():
    with pytest.raises(TemplateError, match="unclosed action|unexpected"):
        render("{{ .Prompt ", USER)


@pytest.mark.parametrize("src", [
    "{{ range $i := 100000 }}{{ range $j := 100000 }}{{ end }}{{ end }}",
    "{{ range $i := 100000 }}{{ range $j := 100000 }}xxxxxxxxxxxxxxxxxxxx{{ end }}{{ end }}",
    '{{ define "r" }}{{ template "r" . }}{{ end }}{{ template "r" . }}',
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% for i in range(100000) %}{% for j in range(100000) %}xxxxxxxxxx{% endfor %}{% endfor %}",
    "{{ 'a' * 100000000 }}", "{{ 'a' | center(100000000) }}", "{{ '%099999999d' % 1 }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{% set ns = namespace(x='ab') %}{% for i in range(40) %}{% set ns.x = ns.x ~ ns.x %}{% endfor %}{{ ns.x }}",
    "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
])
def test_templates_are_bounded(src):
    t0 = time.monotonic()
    with pytest.raises(TemplateError):
        render(src, USER, budget=Budget(steps=200_000, output=1 << 20, seconds=10))
    assert time.monotonic() - t0 < 10


def test_deadline_bounds_a_render():
    with pytest.raises(TemplateError, match="seconds"):
        render("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", USER,
               budget=Budget(steps=10**12, seconds=0.2))


def test_jinja_sandbox_refuses_unsafe_access():
    for src in ("{{ messages.append(1) }}", "{{ ''.__class__.__mro__ }}"):
        with pytest.raises(TemplateError, match="unsafe"):
            render(src, USER)


def test_jinja_receives_thinking_switches():
    src = ("{% if enable_thinking is defined %}{{ enable_thinking }}{% else %}unset{% endif %} "
           "{{ reasoning_effort | default('none') }} {{ think | default('none') }}")
    assert render(src, USER) == "unset none none"
    assert render(src, USER, think=False) == "False none False"
    assert render(src, USER, think="high") == "True high high"


def test_jinja_tojson_is_hugging_faces():
    src = "{{ tools[0] | tojson }}"
    tool = {"type": "function", "function": {"name": "f", "description": "<é>"}}
    assert render(src, USER, tools=[tool]) == '{"type": "function", "function": {"name": "f", "description": "<é>"}}'
