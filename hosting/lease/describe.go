package lease

import (
	"fmt"
	"strings"
)

// String names a message type as the transcripts and logs print it.
func (t MsgType) String() string {
	switch t {
	case MsgAppend:
		return "Append"
	case MsgAppendAck:
		return "AppendAck"
	case MsgPromiseRequest:
		return "PromiseRequest"
	case MsgPromise:
		return "Promise"
	case MsgRelease:
		return "Release"
	case MsgHandoff:
		return "Handoff"
	case MsgPairBeat:
		return "PairBeat"
	case MsgPairAck:
		return "PairAck"
	}
	return fmt.Sprintf("MsgType(%d)", uint8(t))
}

// String prints a checkpoint as seq:id.
func (c Checkpoint) String() string { return fmt.Sprintf("%d:%s", c.Seq, c.ID) }

// String prints a configuration: c3[a b n] or, joint, c3[a b n|a b d].
func (c Conf) String() string {
	if len(c.Joint) == 0 {
		return fmt.Sprintf("c%d%v", c.Index, c.Members)
	}
	return fmt.Sprintf("c%d[%s|%s]", c.Index, strings.Join(c.Members, " "), strings.Join(c.Joint, " "))
}

// String prints the hard state on one line (the configuration only once
// it changed).
func (hs HardState) String() string {
	s := fmt.Sprintf("epoch=%d accepted=%s@%d", hs.Epoch, hs.Accepted, hs.AcceptedAt)
	if hs.Conf.Index > 0 {
		s += " conf=" + hs.Conf.String()
	}
	return s
}

// DescribeMessage prints m on one line, with only the fields its type uses.
func DescribeMessage(m Message) string {
	var b strings.Builder
	switch m.Type {
	case MsgPairBeat:
		return fmt.Sprintf("%s->%s PairBeat r%d s%d rel%d", m.From, m.To, m.Round, m.Session, m.Gen)
	case MsgPairAck:
		return fmt.Sprintf("%s->%s PairAck r%d s%d g%d echo=s%d/rel%d", m.From, m.To, m.Round, m.Session, m.Gen, m.Echo, m.EchoGen)
	}
	fmt.Fprintf(&b, "%s->%s %s e%d", m.From, m.To, m.Type, m.Epoch)
	switch m.Type {
	case MsgAppend:
		fmt.Fprintf(&b, " r%d cp=%s commit=%d", m.Round, m.Checkpoint, m.Commit)
		if m.Conf.Index > 0 {
			fmt.Fprintf(&b, " conf=%s", m.Conf)
		}
	case MsgAppendAck:
		if m.Reject {
			fmt.Fprintf(&b, " r%d REJECT hint=%d", m.Round, m.Hint)
		} else {
			fmt.Fprintf(&b, " r%d seq=%d", m.Round, m.Checkpoint.Seq)
			if m.Conf.Index > 0 {
				fmt.Fprintf(&b, " conf=%d", m.Conf.Index)
			}
		}
	case MsgPromise:
		if m.Reject {
			fmt.Fprintf(&b, " REJECT hint=%d", m.Hint)
		} else {
			fmt.Fprintf(&b, " accepted=%s@%d", m.Checkpoint, m.AcceptedAt)
			if m.Conf.Index > 0 {
				fmt.Fprintf(&b, " conf=%s", m.Conf)
			}
		}
	case MsgRelease, MsgHandoff:
		fmt.Fprintf(&b, " commit=%d", m.Commit)
	}
	if m.Session != 0 {
		fmt.Fprintf(&b, " s%d", m.Session)
		if m.Type == MsgAppendAck {
			fmt.Fprintf(&b, " g%d echo=rel%d", m.Gen, m.Echo)
		} else {
			fmt.Fprintf(&b, " rel%d", m.Gen)
		}
	}
	return b.String()
}

// DescribeReady prints rd one output per line, in handling order, each
// line prefixed by prefix.
func DescribeReady(prefix string, rd Ready) string {
	var b strings.Builder
	if rd.Persist != nil {
		fmt.Fprintf(&b, "%spersist %s\n", prefix, rd.Persist)
	}
	if rd.Stop {
		fmt.Fprintf(&b, "%sSTOP agent\n", prefix)
	}
	for _, c := range rd.Committed {
		fmt.Fprintf(&b, "%scommitted %s\n", prefix, c)
	}
	if rd.Start != nil {
		fmt.Fprintf(&b, "%sSTART agent from %s\n", prefix, rd.Start)
	}
	for _, m := range rd.Messages {
		fmt.Fprintf(&b, "%s%s\n", prefix, DescribeMessage(m))
	}
	if rd.Removed {
		fmt.Fprintf(&b, "%sREMOVED from the group\n", prefix)
	}
	return b.String()
}

// Describe prints the machine's state on one line.
func (m *Machine) Describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s t=%d %s %s", m.cfg.Self, m.now, m.role, m.hs)
	if m.removed {
		b.WriteString(" REMOVED")
	}
	switch m.role {
	case Holder:
		fmt.Fprintf(&b, " running=%t lease-end=%d commit=%d", m.running, m.effLeaseEnd(), m.committed.Seq)
	case Candidate:
		fmt.Fprintf(&b, " attempt=%d", m.attempt)
	case Follower:
		fmt.Fprintf(&b, " lapse-at=%d commit=%d", m.lapseTick(), m.commit)
		if m.bound != "" {
			fmt.Fprintf(&b, " bound=%s", m.bound)
		}
		if m.backoffUntil > m.now {
			fmt.Fprintf(&b, " backoff-until=%d", m.backoffUntil)
		}
	}
	return b.String()
}
