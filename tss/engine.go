package tss

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/custos-wallet/custos/ids"
)

// Config tunes an Engine.
type Config struct {
	// IdleTimeout ends a session whose local parties took no message for
	// this long, naming the members it was waiting for. Default 60s: a
	// keygen round with proofs takes seconds of CPU per party. It bounds
	// each wait, not the whole session: a slow member can stretch every
	// round, so callers set a deadline on the context as well.
	IdleTimeout time.Duration
	// TickInterval is the resolution of IdleTimeout. Default 100ms.
	TickInterval time.Duration
	Logger       *slog.Logger
	// MaxPresignatures bounds the presignatures parked at once; parking
	// one more burns the oldest. Default 32.
	MaxPresignatures int
	// PresignMaxAge burns a parked presignature this old. Default 1h.
	PresignMaxAge time.Duration
}

// Engine runs keygen, signing and resharing sessions for one node over a
// Transport. It is safe for concurrent use: each call runs its own session.
type Engine struct {
	tr      Transport
	cfg     Config
	log     *slog.Logger
	now     func() time.Time // the presignatures' clock; tests replace it
	presign presignStore
}

// NewEngine makes an engine for the node behind tr.
func NewEngine(tr Transport, cfg Config) *Engine {
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 60 * time.Second
	}
	if cfg.TickInterval <= 0 {
		cfg.TickInterval = 100 * time.Millisecond
	}
	if cfg.MaxPresignatures <= 0 {
		cfg.MaxPresignatures = 32
	}
	if cfg.PresignMaxAge <= 0 {
		cfg.PresignMaxAge = time.Hour
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Engine{tr: tr, cfg: cfg, log: log.With("member", tr.Self()), now: time.Now}
}

// maxIdle is IdleTimeout in ticks of TickInterval.
func (e *Engine) maxIdle() int {
	return int((e.cfg.IdleTimeout + e.cfg.TickInterval - 1) / e.cfg.TickInterval)
}

// paramsHash binds what a session was asked to do: every member must have
// been given the same request.
func paramsHash(parts ...any) [32]byte {
	b, err := json.Marshal(parts)
	if err != nil {
		panic(fmt.Sprintf("tss: encode session parameters: %v", err))
	}
	return sha256.Sum256(b)
}

func sortedIDs(memberIDs []ids.MemberID) []ids.MemberID {
	out := slices.Clone(memberIDs)
	slices.Sort(out)
	return out
}

// run drives s over the transport until it ends, and returns the Ready
// that says Done, with the outcome.
func (e *Engine) run(ctx context.Context, s *Session) (Ready, error) { return e.drive(ctx, s, s.Start) }

// drive opens s's transport session, sends what first returns, and steps
// s until it ends or parks (a presignature after round 4); it returns the
// Ready that says Done or Parked.
func (e *Engine) drive(ctx context.Context, s *Session, first func() Ready) (done Ready, err error) {
	start := time.Now()
	log := e.log.With("session", s.id, "protocol", s.proto)
	conn, err := e.tr.Open(ctx, s.id, s.members())
	if err != nil {
		return Ready{}, &SessionError{Session: s.id, Kind: FailTransport, Err: fmt.Errorf("open session: %w", err)}
	}
	defer func() {
		if cerr := conn.Close(err); cerr != nil && err == nil {
			// A transport that found misbehaviour only at the end (an
			// equivocation exposed by a late echo) names the culprit.
			if se, ok := AsSessionError(cerr); ok {
				err = se
			} else {
				err = &SessionError{Session: s.id, Kind: FailTransport, Err: fmt.Errorf("close session: %w", cerr)}
			}
		}
		if err != nil {
			done = Ready{}
			log.Warn("session failed", "err", err, "took", time.Since(start))
		} else {
			log.Debug("session done", "took", time.Since(start))
		}
	}()
	ticker := time.NewTicker(e.cfg.TickInterval)
	defer ticker.Stop()
	rd := first()
	for {
		for _, m := range rd.Messages {
			var serr error
			if m.Broadcast {
				serr = conn.Broadcast(ctx, m.Payload)
			} else {
				serr = conn.Send(ctx, m.To, m.Payload)
			}
			if serr != nil {
				// A transport that ended the session names the culprits.
				if se, ok := AsSessionError(conn.Err()); ok {
					return Ready{}, se
				}
				if ctx.Err() != nil { // our caller gave up: blame no recipient
					return Ready{}, &SessionError{Session: s.id, Kind: FailLocal, Waiting: s.WaitingFor(), Err: ctx.Err()}
				}
				se := &SessionError{Session: s.id, Kind: FailTransport, Err: fmt.Errorf("send: %w", serr)}
				if !m.Broadcast {
					se.Waiting = []ids.MemberID{m.To}
				}
				return Ready{}, se
			}
		}
		if rd.Err != nil {
			return Ready{}, rd.Err
		}
		if rd.Done || rd.Parked {
			return rd, nil
		}
		select {
		case in, ok := <-conn.Incoming():
			if !ok {
				return Ready{}, e.transportErr(s, conn)
			}
			rd = s.Step(in)
		case <-ticker.C:
			rd = s.Tick()
		case <-conn.Done():
			return Ready{}, e.transportErr(s, conn)
		case <-ctx.Done():
			return Ready{}, &SessionError{Session: s.id, Kind: FailLocal, Waiting: s.WaitingFor(), Err: ctx.Err()}
		}
	}
}

func (e *Engine) transportErr(s *Session, conn Conn) error {
	err := conn.Err()
	if se, ok := AsSessionError(err); ok {
		return se
	}
	if err == nil {
		err = errors.New("session closed by the transport")
	}
	return &SessionError{Session: s.id, Kind: FailTransport, Waiting: s.WaitingFor(), Err: err}
}

// pollEnd drains a party's end channel into dst; true once it has.
func pollEnd[T any](ch <-chan *T, dst **T) func() bool {
	return func() bool {
		select {
		case v := <-ch:
			*dst = v
			return true
		default:
			return *dst != nil
		}
	}
}

// checkQuorum: members must be distinct members of c, at least t+1 of them.
func checkQuorum(c Committee, members []ids.MemberID, what string) error {
	if len(members) < c.Threshold+1 {
		return fmt.Errorf("%d %s, the key needs %d", len(members), what, c.Threshold+1)
	}
	seen := map[ids.MemberID]bool{}
	for _, id := range members {
		if !c.Has(id) {
			return fmt.Errorf("%s %s is not a member of the key's committee", what, id)
		}
		if seen[id] {
			return fmt.Errorf("%s %s appears twice", what, id)
		}
		seen[id] = true
	}
	return nil
}
