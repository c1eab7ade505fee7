package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"text/template"
)

type req struct {
	T string         `json:"t"`
	D map[string]any `json:"d"`
}

func main() {
	funcs := template.FuncMap{"json": func(v any) string { b, _ := json.Marshal(v); return string(b) }}
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	enc := json.NewEncoder(os.Stdout)
	for sc.Scan() {
		var r req
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			panic(err)
		}
		res := map[string]any{}
		func() {
			defer func() {
				if p := recover(); p != nil {
					res["err"] = fmt.Sprint("panic: ", p)
				}
			}()
			t, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(r.T)
			if err != nil {
				res["err"] = "parse: " + err.Error()
				return
			}
			var b bytes.Buffer
			if err := t.Execute(&b, r.D); err != nil {
				res["err"] = "exec: " + err.Error()
				res["out"] = b.String()
				return
			}
			res["out"] = b.String()
		}()
		enc.Encode(res)
	}
}
