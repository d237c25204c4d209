package bench

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/custos-wallet/custos/agent/sidecar"
	"github.com/custos-wallet/custos/api"
	"github.com/custos-wallet/custos/chain"
	"github.com/custos-wallet/custos/client"
	"github.com/custos-wallet/custos/dev"
	"github.com/custos-wallet/custos/ids"
	"github.com/custos-wallet/custos/node"
	"github.com/custos-wallet/custos/p2p"
	"github.com/custos-wallet/custos/tss"
	"github.com/ethereum/go-ethereum/common"
	"github.com/ethereum/go-ethereum/common/hexutil"
	"github.com/ethereum/go-ethereum/core/types"
	"github.com/ethereum/go-ethereum/params"
	gethrpc "github.com/ethereum/go-ethereum/rpc"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// payment is what the REST, JSON-RPC and MCP scenarios pay a dev vendor
// each time: 1 gwei, well inside the sample policy's hot tier.
var payment = big.NewInt(params.GWei)

// inProcessKey is the 2-of-3 key the setup made in-process.
type inProcessKey struct {
	ids    []ids.MemberID
	keys   []crypto.PrivKey
	shares []*tss.Share
}

func loadKey(work string) (*inProcessKey, error) {
	k := &inProcessKey{}
	for i := range roles {
		key, err := p2p.LoadIdentity(identityPath(work, i))
		if err != nil {
			return nil, err
		}
		pid, err := peer.IDFromPrivateKey(key)
		if err != nil {
			return nil, err
		}
		b, err := os.ReadFile(sharePath(work, i))
		if err != nil {
			return nil, err
		}
		sh, err := tss.UnmarshalShare(b)
		if err != nil {
			return nil, fmt.Errorf("share %d: %w", i, err)
		}
		k.ids, k.keys, k.shares = append(k.ids, ids.MemberID(pid.String())), append(k.keys, key), append(k.shares, sh)
	}
	return k, nil
}

// signWith signs with the first two members, each through its engine.
func signWith(k *inProcessKey, engines []*tss.Engine) signer {
	signers := k.ids[:2]
	return func(ctx context.Context, i int) error {
		sid := ids.NewSessionID()
		digest := sha256.Sum256([]byte("custos bench " + strconv.Itoa(i)))
		return all(len(engines), func(j int) error {
			_, err := engines[j].Sign(ctx, tss.SignRequest{Session: sid, Share: k.shares[j], Signers: signers, Digest: digest})
			return err
		})
	}
}

// startFloor: both signers in this process over the engine's in-memory
// transport, with the engine's default configuration (as a node's).
func startFloor(_ context.Context, spec Spec) (signer, func() error, error) {
	k, engines, stop, err := floorEngines(spec)
	if err != nil {
		return nil, nil, err
	}
	return signWith(k, engines), stop, nil
}

func floorEngines(spec Spec) (*inProcessKey, []*tss.Engine, func() error, error) {
	k, err := loadKey(spec.Work)
	if err != nil {
		return nil, nil, nil, err
	}
	net := newMemNet()
	engines := []*tss.Engine{tss.NewEngine(net.endpoint(k.ids[0]), tss.Config{}), tss.NewEngine(net.endpoint(k.ids[1]), tss.Config{})}
	return k, engines, nil, nil
}

// startLibp2p: three libp2p hosts on loopback (the two signers and the
// idle third member), the engine over each signer's host.
func startLibp2p(_ context.Context, spec Spec) (signer, func() error, error) {
	k, engines, stop, err := libp2pEngines(spec)
	if err != nil {
		return nil, nil, err
	}
	return signWith(k, engines), stop, nil
}

func libp2pEngines(spec Spec) (*inProcessKey, []*tss.Engine, func() error, error) {
	k, err := loadKey(spec.Work)
	if err != nil {
		return nil, nil, nil, err
	}
	var members []p2p.Member
	for _, id := range k.ids {
		pid, err := peer.Decode(string(id))
		if err != nil {
			return nil, nil, nil, err
		}
		members = append(members, p2p.Member{ID: pid})
	}
	var nodes []*p2p.Node
	stop := func() error {
		var errs []error
		for _, n := range nodes {
			errs = append(errs, n.Close())
		}
		return errors.Join(errs...)
	}
	for _, key := range k.keys {
		n, err := p2p.New(p2p.Config{Identity: key, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Members: members,
			Sessions: p2p.NewMemorySessionRegistry(), Logger: quietLogger()})
		if err != nil {
			stop()
			return nil, nil, nil, err
		}
		nodes = append(nodes, n)
	}
	for i, a := range nodes {
		for j, b := range nodes {
			if i != j {
				if err := a.SetAddrs(b.ID(), b.ListenAddrs()); err != nil {
					stop()
					return nil, nil, nil, err
				}
			}
		}
	}
	engines := []*tss.Engine{tss.NewEngine(nodes[0], tss.Config{}), tss.NewEngine(nodes[1], tss.Config{})}
	return k, engines, stop, nil
}

// startCluster starts the child's copy of the dev cluster: no key is
// made, no pre-parameters are handed out. The coordinator keeps
// presignTarget presignatures per hot quorum (0: none, the full protocol
// for every signature).
func startCluster(ctx context.Context, spec Spec, presignTarget int) (*dev.Cluster, error) {
	if spec.Dir == "" {
		return nil, errors.New("no cluster directory")
	}
	if err := setCoordinator(spec.Dir, presignTarget); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(logPath(spec.Work), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	c, err := dev.Start(ctx, dev.Options{Dir: spec.Dir, Log: logf, PreParams: fixtures(false), NoVault: true})
	if err != nil {
		logf.Close()
		return nil, fmt.Errorf("dev cluster: %w", err)
	}
	return c, nil
}

func closer(c *dev.Cluster, more ...func() error) func() error {
	return func() error {
		var errs []error
		for _, f := range more {
			errs = append(errs, f())
		}
		errs = append(errs, c.Close())
		return errors.Join(errs...)
	}
}

// startREST: the agent's signed request through POST /v1/requests, then
// the long poll until it is final, as an agent without the sidecar does.
func startREST(ctx context.Context, spec Spec) (signer, func() error, reporter, error) {
	c, err := startCluster(ctx, spec, 0)
	if err != nil {
		return nil, nil, nil, err
	}
	sign, report, err := restSigner(c)
	if err != nil {
		c.Close()
		return nil, nil, nil, err
	}
	return sign, closer(c), report, nil
}

// restSigner signs through the REST API of a started cluster.
func restSigner(c *dev.Cluster) (signer, reporter, error) {
	cred, err := c.AgentCredential()
	if err != nil {
		return nil, nil, err
	}
	cl, err := client.New(c.URL(), client.Options{Agent: cred})
	if err != nil {
		return nil, nil, err
	}
	var ph phases
	hot := c.Hot()
	chainID := c.ChainID()
	run := randomHex(4)
	sign := func(ctx context.Context, i int) error {
		t0 := time.Now()
		to := dev.Vendors[0]
		tx := types.NewTx(&types.DynamicFeeTx{ChainID: new(big.Int).SetUint64(chainID), Nonce: uint64(i), To: &to, Value: payment,
			Gas: 21000, GasFeeCap: big.NewInt(20 * params.GWei), GasTipCap: big.NewInt(params.GWei)})
		raw, err := tx.MarshalBinary()
		if err != nil {
			return err
		}
		from := hot.Address
		r, err := cl.Submit(ctx, cred, api.SignRequest{Key: hot.ID, From: &from, ChainID: chainID, Kind: chain.KindTransaction.String(),
			Payload: json.RawMessage(strconv.Quote(hexutil.Encode(raw))), IdempotencyKey: fmt.Sprintf("bench-%s-%d", run, i),
			Expiry: time.Now().Add(5 * time.Minute).UTC().Truncate(time.Second)})
		if err != nil {
			return err
		}
		submitted := time.Now()
		if r, err = cl.WaitFinal(ctx, r.ID); err != nil {
			return err
		}
		if err := sidecar.Outcome(r); err != nil {
			return err
		}
		ph.add(i, t0, submitted, time.Now(), r)
		return nil
	}
	return sign, ph.report, nil
}

// phases splits the REST scenario's latencies at the times the
// coordinator recorded (same process, same clock): the POST, the wait
// until the signing session was proposed, the session from proposal to
// its end, and from there to the client holding the answer. The session
// splits further: from the proposal until every member had joined and
// was told to start, from there until the coordinator held the checked
// signature (the protocol and the collection of results), and the
// signature's audit entry and record.
type phases struct {
	mu   sync.Mutex
	rows map[int][nPhases]float64
}

const nPhases = 7

var phaseNames = [nPhases]string{"rest_post", "rest_to_session", "rest_session", "rest_after_session",
	"rest_propose_start", "rest_protocol", "rest_record"}

func (p *phases) add(i int, t0, submitted, done time.Time, r *api.Request) {
	if len(r.Attempts) == 0 {
		return
	}
	a := r.Attempts[len(r.Attempts)-1]
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rows == nil {
		p.rows = map[int][nPhases]float64{}
	}
	p.rows[i] = [nPhases]float64{submitted.Sub(t0).Seconds(), a.Started.Sub(submitted).Seconds(),
		a.Ended.Sub(a.Started).Seconds(), done.Sub(a.Ended).Seconds(),
		a.Running.Sub(a.Started).Seconds(), a.Collected.Sub(a.Running).Seconds(), a.Ended.Sub(a.Collected).Seconds()}
}

func (p *phases) report(first int) (map[string]float64, []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cols := make([][]float64, nPhases)
	for i, r := range p.rows {
		if i >= first {
			for j := range r {
				cols[j] = append(cols[j], r[j])
			}
		}
	}
	out := map[string]float64{}
	for j, name := range phaseNames {
		if len(cols[j]) > 0 {
			out[name] = quantile(cols[j], 0.5)
		}
	}
	return out, nil
}

// startRPC: eth_sendTransaction through the sidecar's JSON-RPC endpoint,
// which fills nonce, gas and fees, signs through the cluster and
// broadcasts to the dev chain.
func startRPC(ctx context.Context, spec Spec) (signer, func() error, error) {
	c, err := startCluster(ctx, spec, 0)
	if err != nil {
		return nil, nil, err
	}
	sign, stop, err := rpcSigner(ctx, c)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	return sign, closer(c, stop), nil
}

// rpcSigner signs through the sidecar of a started cluster.
func rpcSigner(ctx context.Context, c *dev.Cluster) (signer, func() error, error) {
	rc, err := gethrpc.DialContext(ctx, c.AgentRPCURL())
	if err != nil {
		return nil, nil, err
	}
	hot := c.Hot()
	args := map[string]any{"from": hot.Address, "to": dev.Vendors[0], "value": (*hexutil.Big)(payment)}
	sign := func(ctx context.Context, _ int) error {
		var h common.Hash
		return rc.CallContext(ctx, &h, "eth_sendTransaction", args)
	}
	return sign, func() error { rc.Close(); return nil }, nil
}

// startMCP: the transfer tool over MCP's streamable HTTP transport, one
// client session, calls at once as a host with parallel tool calls makes
// them.
func startMCP(ctx context.Context, spec Spec) (signer, func() error, error) {
	c, err := startCluster(ctx, spec, 0)
	if err != nil {
		return nil, nil, err
	}
	tr := &sdk.StreamableClientTransport{Endpoint: c.MCPURL(), HTTPClient: &http.Client{Transport: bearer{c.MCPToken()}}}
	cs, err := sdk.NewClient(&sdk.Implementation{Name: "custos-bench", Version: "1"}, nil).Connect(ctx, tr, nil)
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("MCP: %w", err)
	}
	hot := c.Hot()
	args := map[string]any{"to": dev.Vendors[0].Hex(), "amount": chain.FormatUnits(payment, 18), "from": hot.Address.Hex()}
	sign := func(ctx context.Context, _ int) error {
		res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "transfer", Arguments: args})
		if err != nil {
			return err
		}
		if res.IsError {
			var text []string
			for _, c := range res.Content {
				if tc, ok := c.(*sdk.TextContent); ok {
					text = append(text, tc.Text)
				}
			}
			return fmt.Errorf("transfer: %s", strings.Join(text, " "))
		}
		return nil
	}
	return sign, closer(c, cs.Close), nil
}

type bearer struct{ token string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return http.DefaultTransport.RoundTrip(r)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// idleSettle is how long the idle node runs before its memory is read:
// past its start, its first dials and its pool's first look.
const idleSettle = 5 * time.Second

// runIdle starts one node (the dev policy node, with its share and
// stored pre-parameters) and reads its resident memory once it has
// settled with nothing to do.
func runIdle(ctx context.Context, spec Spec) (*Result, error) {
	cfg, err := node.LoadConfig(filepath.Join(spec.Dir, dev.NamePolicy, node.ConfigFile), nil)
	if err != nil {
		return nil, err
	}
	n, err := node.New(cfg, node.Options{Logger: quietLogger(), Generate: fixtures(false)(dev.NamePolicy)})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	select {
	case err := <-done:
		cancel()
		return nil, fmt.Errorf("node stopped: %w", err)
	case <-time.After(idleSettle):
	}
	rss := residentBytes()
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		return nil, err
	}
	return &Result{Scenario: scenarioIdle, Values: map[string]float64{"idle_rss": rss},
		Notes: []string{fmt.Sprintf("idle_rss: VmRSS of a process running one node (policy role, one key share), %s after start", idleSettle)}}, nil
}
