// Package transcript runs the data-driven transcript tests of the lease
// machine (hosting/lease) and the custody driver (hosting/custody): a file
// is a list of blocks
//
//	# comments (kept on rewrite)
//	command arg key=value ...
//	----
//	expected output (no blank lines)
//
// separated by blank lines. Run compares each command's output with the
// file, or rewrites the file with the actual output (review the diff).
package transcript

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// Block is one command of a transcript, with the comments above it.
type Block struct {
	Comments []string
	Cmd      string
	Want     string
	Line     int
}

// Parse reads the transcript at path.
func Parse(t testing.TB, path string) []Block {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n")
	var out []Block
	var cur Block
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		switch {
		case strings.TrimSpace(l) == "":
			continue
		case strings.HasPrefix(l, "#"):
			cur.Comments = append(cur.Comments, l)
			continue
		}
		cur.Cmd, cur.Line = strings.TrimSpace(l), i+1
		if i+1 >= len(lines) || lines[i+1] != "----" {
			t.Fatalf("%s:%d: command %q is not followed by a ---- line", path, i+1, l)
		}
		i += 2
		var want []string
		for ; i < len(lines) && strings.TrimSpace(lines[i]) != ""; i++ {
			want = append(want, lines[i])
		}
		cur.Want = strings.Join(want, "\n")
		out = append(out, cur)
		cur = Block{}
	}
	if len(cur.Comments) > 0 {
		out = append(out, cur) // trailing comments
	}
	return out
}

// Run runs every command of the transcript at path through run (an empty
// output prints as "ok"), and reports each output that differs from the
// file — or, with rewrite, writes the actual outputs back into the file.
func Run(t *testing.T, path string, rewrite bool, run func(cmd string) string) {
	t.Helper()
	var out strings.Builder
	for _, b := range Parse(t, path) {
		for _, c := range b.Comments {
			out.WriteString(c + "\n")
		}
		if b.Cmd == "" {
			continue
		}
		got := strings.TrimRight(run(b.Cmd), "\n")
		if got == "" {
			got = "ok"
		}
		fmt.Fprintf(&out, "%s\n----\n%s\n\n", b.Cmd, got)
		if !rewrite && got != b.Want {
			t.Errorf("%s:%d: %s\n--- got:\n%s\n--- want:\n%s", path, b.Line, b.Cmd, got, b.Want)
		}
	}
	if rewrite {
		if err := os.WriteFile(path, []byte(strings.TrimRight(out.String(), "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
