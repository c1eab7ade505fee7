import json, random, subprocess, sys
random.seed(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
atoms = ["{{", "}}", "{{-", "-}}", " ", ".S", ".L", ".M", ".N", ".F", ".Nil", ".Missing", ".Msgs", "$", "$x", "$x :=", "$x =", "$i, $e :=",
         "if", "else", "end", "range", "with", "break", "continue", "(", ")", "|", "eq", "ne", "lt", "and", "or", "not", "len", "index", "slice",
         "print", "printf", "json", "html", "js", "\"a\"", "\"%v%d\"", "1", "0", "-1", "2.5", "true", "nil", ".Role", ".Content", "/*", "*/", "text", "\n", "'x'", "`r`", ",", "define", "template", "block", "\"t\""]
cases = []
for _ in range(3000):
    n = random.randint(4, 30)
    cases.append("".join(random.choice(atoms) + random.choice(["", " "]) for _ in range(n)))
with open("fuzzcases.txt", "w") as f:
    for c in cases:
        f.write(json.dumps(c) + "\n")
