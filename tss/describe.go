package tss

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/custos-wallet/custos/ids"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// DescribeMessage says what one session message is, for logs and golden
// files: sender and recipient ("*" for a broadcast to every member), the
// protocol step,
// tss-lib's message type and, in a reshare, the committees it goes
// between. It never shows the message's bytes, which are random.
func DescribeMessage(from, to ids.MemberID, broadcast bool, payload []byte) string {
	if to == "" {
		to = "*"
	}
	route, how := fmt.Sprintf("%s→%s", from, to), "direct"
	if broadcast {
		how = "broadcast"
	}
	env, err := decodeEnvelope(payload)
	if err != nil {
		return fmt.Sprintf("%s %s undecodable (%d bytes)", route, how, len(payload))
	}
	if env.Notice {
		step, waiting, _ := bytes.Cut(env.Wire, []byte{'\n'})
		return fmt.Sprintf("%s %s stall notice: stuck at step %s waiting for %s", route, how, step,
			strings.ReplaceAll(string(waiting), "\n", ","))
	}
	typ := typeName(env.Wire)
	desc := fmt.Sprintf("%s %s", route, how)
	if step, ok := stepOf[typ]; ok {
		desc += fmt.Sprintf(" round %d", step)
	}
	desc += " " + typ[strings.LastIndex(typ, ".")+1:]
	if env.From != tagMain || env.To != maskOf(tagMain) {
		var to []string
		for _, t := range []tag{tagMain, tagOld, tagNew} {
			if env.To.has(t) {
				to = append(to, t.String())
			}
		}
		desc += fmt.Sprintf(" %s→%s", env.From, strings.Join(to, "+"))
	}
	return desc
}

// typeName is the full tss-lib message type of wire bytes.
func typeName(wire []byte) string {
	var a anypb.Any
	if proto.Unmarshal(wire, &a) != nil {
		return "undecodable"
	}
	return a.TypeUrl[strings.LastIndex(a.TypeUrl, "/")+1:]
}

// Describe says what o is, sent by from; see DescribeMessage.
func (o Outbound) Describe(from ids.MemberID) string {
	return DescribeMessage(from, o.To, o.Broadcast, o.Payload)
}

// Describe says what in is, received by to; see DescribeMessage.
func (in Incoming) Describe(to ids.MemberID) string {
	return DescribeMessage(in.From, to, in.Broadcast, in.Payload)
}

// stepOf is the protocol step of every message type the engine admits.
var stepOf = func() map[string]int {
	m := map[string]int{}
	for _, rs := range [][]round{keygenRounds, signRounds, reshareOldRounds, reshareNewRounds} {
		for _, r := range rs {
			for _, typ := range r.types {
				m[typ] = r.step
			}
		}
	}
	return m
}()
