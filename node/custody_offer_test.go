package node

import (
	"errors"
	"strings"
	"testing"
)

// TestOfferKind: an offer asks exactly one thing; one that asks two, or
// carries a join's options on another kind, is refused with the reason.
func TestOfferKind(t *testing.T) {
	const did = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
	ok := []struct {
		o    custodyOffer
		want offerKind
	}{
		{custodyOffer{DID: did}, offerJoin},
		{custodyOffer{DID: did, Campaign: true, Released: true}, offerJoin},
		{custodyOffer{DID: did, Add: true}, offerAdd},
		{custodyOffer{DID: did, Probe: true}, offerProbe},
		{custodyOffer{DID: did, Leave: true}, offerLeave},
		{custodyOffer{DID: did, Kick: true}, offerKick},
		{custodyOffer{DID: did, Leave: true, Deleted: "bafy"}, offerLeave},
	}
	for _, c := range ok {
		if k, err := c.o.kind(); err != nil || k != c.want {
			t.Errorf("%+v: kind %v, %v; want %v", c.o, k, err, c.want)
		}
	}
	bad := []struct {
		o    custodyOffer
		says string
	}{
		{custodyOffer{DID: did, Probe: true, Leave: true}, "sets leave and probe"},
		{custodyOffer{DID: did, Kick: true, Add: true}, "sets kick and add"},
		{custodyOffer{DID: did, Leave: true, Campaign: true}, "options of a join, not of an offer to leave"},
		{custodyOffer{DID: did, Add: true, Released: true}, "options of a join, not of an offer to add"},
		{custodyOffer{Leave: true}, "names no agent"},
		{custodyOffer{DID: did, Deleted: "bafy"}, "deleted is an option of a leave offer, not of a join"},
		{custodyOffer{DID: did, Kick: true, Deleted: "bafy"}, "not of a kick"},
	}
	for _, c := range bad {
		_, err := c.o.kind()
		if !errors.Is(err, ErrBadMessage) || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%+v: %v; want ErrBadMessage saying %q", c.o, err, c.says)
		}
	}
}
