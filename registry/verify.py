"""Check the curated catalog against the Hugging Face Hub: every size's repo exists and holds every
GGUF file the catalog names. One line per problem on stdout, a summary on stderr; exit 0 when all is
well, 1 when a repo or file is missing (or a catalog file breaks the schema), 2 when the Hub could not
be asked. The Hub is huggingface_hub's own (HF_ENDPOINT, HF_TOKEN and proxies apply), through the
same client code a pull uses.

    .venv/bin/python registry/verify.py                      the built-in catalog
    .venv/bin/python registry/verify.py team.json            another catalog file
    HF_ENDPOINT=http://127.0.0.1:8080 .venv/bin/python registry/verify.py   a mirror or look-alike
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

if not __package__:  # run as a file from a checkout: check with the checkout's own package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ollamalike.errors import NotFound, OllamaError  # noqa: E402
from ollamalike.hub.catalog import Catalog, CatalogError, builtin  # noqa: E402
from ollamalike.hub.pull import HubSource  # noqa: E402


def check(cat: Catalog, source: HubSource) -> tuple[list[str], list[str], int]:
    """(problems, errors reaching the Hub, files checked) for every entry of `cat`."""
    problems: list[str] = []
    errors: list[str] = []
    checked = 0
    for model, m in cat.data["models"].items():
        for size, s in m["sizes"].items():
            where, repo = f"{model}:{size}", s["repo"]
            try:
                have = {f.path for f in source.list_files(repo, "main")}
            except NotFound:
                problems.append(f"{where}: repository '{repo}' not found")
                continue
            except OllamaError as e:  # unreachable (after the client's own retries): stop here
                errors.append(f"{where}: could not list '{repo}', stopping: {e}")
                return problems, errors, checked
            named = list(s["files"].items()) + ([("projector", s["projector"])] if s.get("projector") else [])
            for quant, files in named:
                for name in files if isinstance(files, list) else [files]:
                    checked += 1
                    if name not in have:
                        close = difflib.get_close_matches(name, sorted(have), n=1, cutoff=0.8)
                        hint = f"; did you mean '{close[0]}'?" if close else ""
                        problems.append(f"{where}: {quant} file '{name}' not in '{repo}'{hint}")
    return problems, errors, checked


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    ap.add_argument("catalogs", nargs="*", help="catalog JSON files (default: the built-in catalog)")
    ap.add_argument("--endpoint", help="the Hub's base URL (default: HF_ENDPOINT, else huggingface.co)")
    args = ap.parse_args(argv)
    source = HubSource(endpoint=args.endpoint)
    status = 0
    for path in args.catalogs or [str(builtin())]:
        try:
            cat = Catalog.from_file(path)
        except (OSError, ValueError) as e:  # CatalogError and JSON errors are ValueErrors
            kind = "schema" if isinstance(e, CatalogError) else "cannot read"
            print(f"{path}: {kind}: {e}")
            status = max(status, 1)
            continue
        problems, errors, checked = check(cat, source)
        for line in problems + errors:
            print(line)
        print(f"{path}: {checked} files checked against {source.describe()}: {len(problems)} missing"
              + (f", {len(errors)} not checked" if errors else ""), file=sys.stderr)
        status = max(status, 2 if errors else 0, 1 if problems else 0)
    return status


if __name__ == "__main__":
    sys.exit(main())
