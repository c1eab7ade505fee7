import json, subprocess, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from ollamalike.template.goexec import Budget, Executor
from ollamalike.template.gotemplate import parse, TemplateError
from ollamalike.template.ollama import FUNCS, go_any

D = {"S": "héllo <b>&", "E": "", "N": 3, "F": 2.5, "Big": 1000000, "Small": 0.00001, "T": True, "Fa": False,
     "L": ["a", "b", "c"], "NL": [1, 2, 3], "EL": [], "M": {"b": 2, "a": 1, "c": "x"}, "EM": {},
     "Nest": {"X": {"Y": "deep"}}, "Nil": None, "Msgs": [{"Role": "user", "Content": "hi"}, {"Role": "assistant", "Content": "yo"}]}
cases = [l.rstrip("\n") for l in open(sys.argv[1]) if l.strip() and not l.startswith("#")]
cases = [json.loads(c) if c.startswith('"') else c for c in cases]
inp = "\n".join(json.dumps({"t": t, "d": D}) for t in cases) + "\n"
go = subprocess.run([str(Path(__file__).parent / "gotdiff")], input=inp, capture_output=True, text=True).stdout.splitlines()
funcs = {k: v for k, v in FUNCS.items() if k not in ("currentDate", "yesterdayDate", "toTypeScriptType")}
bad = 0
for t, g in zip(cases, go):
    g = json.loads(g)
    try:
        tree, defs = parse(t, set(funcs))
        mine = {"out": Executor(defs, funcs, Budget()).run(tree, go_any(D))}
    except TemplateError as e:
        mine = {"err": str(e)}
    except Exception as e:
        mine = {"err": f"CRASH {type(e).__name__}: {e}"}
    same = ("err" in g) == ("err" in mine) and (("err" in g) or g["out"] == mine["out"])
    if not same:
        bad += 1
        print("DIFF", repr(t)); print("   go:", g); print("   py:", mine)
print(f"{len(cases)-bad}/{len(cases)} agree")
