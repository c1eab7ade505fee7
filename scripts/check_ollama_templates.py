"""Dev check: render every Ollama reference template and diff against its expected outputs.

    PYTHONPATH=$PWD python scripts/check_ollama_templates.py [../shared/reference/ollama-templates]
"""

import difflib
import sys
from pathlib import Path

from ollamalike.template.ollama import GoTemplate

CASES = {
    "user": [{"role": "user", "content": "Hello, how are you?"}],
    "user-assistant-user": [
        {"role": "user", "content": "Hello, how are you?"},
        {"role": "assistant", "content": "I'm doing great. How can I help you today?"},
        {"role": "user", "content": "I'd like to show off how chat templating works!"}],
}
CASES["system-user-assistant-user"] = [{"role": "system", "content": "You are a helpful assistant."}] + \
    CASES["user-assistant-user"]
# Ollama's own test strips one trailing space from these before comparing
STRIP = {"chatqa.gotmpl", "llama2-chat.gotmpl", "mistral-instruct.gotmpl", "openchat.gotmpl", "vicuna.gotmpl"}


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parents[2] / "shared/reference/ollama-templates")
    failed = total = 0
    for path in sorted(root.glob("*.gotmpl")):
        tmpl = GoTemplate(path.read_text().replace("\r\n", "\n"))
        for case, msgs in CASES.items():
            total += 1
            got = tmpl.execute(msgs)
            if path.name in STRIP and got.endswith(" "):
                got = got[:-1]
            want = (root / "testdata" / path.name / case).read_text()
            if got != want:
                failed += 1
                print(f"FAIL {path.name} {case}")
                sys.stdout.writelines(difflib.unified_diff(want.splitlines(True), got.splitlines(True), "want", "got"))
    print(f"{total - failed}/{total} match")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
