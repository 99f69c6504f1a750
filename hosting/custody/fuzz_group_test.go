package custody

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/igor-mesh/igor-node/agents"
)

const fuzzAgent = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"

// FuzzLoadGroup: a group.json holding any bytes loads as a valid group of
// the agent its directory names, or fails with ErrBadGroup. A loaded group
// saves (saveGroup validates again) and loads back equal, with the same
// group ID, so a restart never changes which group a member belongs to.
func FuzzLoadGroup(f *testing.F) {
	valid := Group{Version: 1, Agent: fuzzAgent, Members: []string{"12D3KooWA", "12D3KooWB", "12D3KooWC"},
		Genesis: "bafyreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku", TermMs: 30000,
		Publisher: "12D3KooWA", StartEpoch: 4}
	data, _ := json.MarshalIndent(valid, "", "  ")
	f.Add(data)
	f.Add(data[:len(data)/2])
	f.Add(bytes.Replace(data, []byte(`"12D3KooWA",`), nil, 1)) // still valid: two members
	f.Add(bytes.Replace(data, []byte(`"term_ms": 30000`), []byte(`"term_ms": "30s"`), 1))
	f.Add(bytes.Replace(data, []byte(`"12D3KooWA",`), []byte(`"12D3KooWD",`), 1)) // unsorted
	f.Add([]byte(`{"version":1,"agent":"did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK","members":["a"],"genesis":"x","term_ms":1,"extra":1}`))
	s := store{dir: f.TempDir()}
	id := agents.AgentID(fuzzAgent)
	path := filepath.Join(s.dir, id, "group.json")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		g, err := s.loadGroup(id)
		if err != nil {
			if !errors.Is(err, ErrBadGroup) {
				t.Fatalf("error without ErrBadGroup: %v", err)
			}
			return
		}
		if g.Agent != fuzzAgent {
			t.Fatalf("loaded the group of %s from the directory of %s", g.Agent, fuzzAgent)
		}
		if err := g.validate(); err != nil {
			t.Fatalf("loaded group fails validation: %v", err)
		}
		if err := s.saveGroup(g); err != nil {
			t.Fatalf("loaded group does not save: %v", err)
		}
		back, err := s.loadGroup(id)
		if err != nil {
			t.Fatalf("saved group does not load: %v", err)
		}
		if !reflect.DeepEqual(g, back) || g.ID() != back.ID() {
			t.Fatalf("save/load changed the group:\n %+v\n %+v", g, back)
		}
	})
}
