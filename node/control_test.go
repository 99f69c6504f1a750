package node

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/igor-mesh/igor-node/agents"
)

// TestControlAPIBadInput: every malformed control request gets a 4xx that
// says what was wrong, before anything is signed or sent.
func TestControlAPIBadInput(t *testing.T) {
	ms := startMeshes(t, 1, 1)
	srv, err := ms[0].ServeAPI("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close(context.Background())
	base := "http://" + srv.Addr()
	did := "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
	pub, owner, _ := agents.GenerateKey(rand.Reader)
	other := agents.DID(pub)
	rec := func(agent string) string {
		ctl := &agents.Control{Kind: agents.ControlStop, Agent: agent, Seq: 1, Issued: 1}
		if err := ctl.Sign(owner); err != nil {
			t.Fatal(err)
		}
		data, _ := ctl.Encode()
		return base64.StdEncoding.EncodeToString(data)
	}
	cases := []struct {
		did, body string
		code      int
		want      string
	}{
		{did, "{not json", 400, "control request"},
		{did, `{"kind":"stop","extra":1}`, 400, "extra"},
		{did, `{"kind":"pause"}`, 400, "not stop, start, topup, delete or upgrade"},
		{did, `{"kind":"stop","amount":"1"}`, 400, "only a top-up"},
		{did, `{"kind":"topup","amount":"-1"}`, 400, "amount"},
		{did, `{"kind":"topup","amount":"0"}`, 400, "positive"},
		{did, `{"kind":"topup"}`, 400, "amount"},
		{did, `{"kind":"stop","record":"` + rec(did) + `"}`, 400, "not both"},
		{did, `{"record":"AAEC"}`, 400, "record"},
		{did, `{"record":"` + rec(other) + `"}`, 400, "is for " + other},
		{"did:key:nope", `{"kind":"stop"}`, 400, "did"},
		{did, `{"kind":"stop"}`, 404, "no head record"},
	}
	for _, c := range cases {
		resp, err := http.Post(base+"/v1/agents/"+c.did+"/control", "application/json", strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		var e struct{ Error string }
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != c.code || !strings.Contains(strings.ToLower(e.Error), strings.ToLower(c.want)) {
			t.Errorf("%s %q: HTTP %d %q, want %d mentioning %q", c.did, c.body, resp.StatusCode, e.Error, c.code, c.want)
		}
	}
}
